"""How attempts end, through the mount: a Bedrock answer its content
filter or a guardrail cut short fails with EIO and says why; the
deployment's max_output_tokens reaches every provider in its own field;
.meta attempts carry the time to the first byte of the answer."""
import errno
import hashlib
import json
import os
import urllib.error
import urllib.request

import pytest

from conftest import FakeCloud, read_all, read_meta, sh, wait_finished

AZURE_KEY = "azure-key-outcomes-41c2"
ANTHROPIC_KEY = "sk-ant-outcomes-77e0"
AWS_AKID = "AKIDOUTCOMESTEST"
AWS_SECRET = "outcomes/secret+key/for/tests"
VERTEX_TOKEN = "ya29.outcomes-test-token"

CAP = 50

# provider (as the fake names it) -> directory under the mount
DEPLOYMENTS = {
    "openai": "openai/us/gpt-4o",
    "azure": "azure/westeurope/gpt-4o",
    "bedrock": "aws/eu-central-1/claude-sonnet",
    "vertex": "gcp/europe-west4/gemini-2.0-flash",
    "anthropic": "anthropic/us/claude-sonnet",
}
UNCAPPED = "openai/us/gpt-4o-uncapped"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    fake = FakeCloud(str(tmp_path_factory.mktemp("outcomes")), [
        "--azure-key", AZURE_KEY, "--anthropic-key", ANTHROPIC_KEY,
        "--aws-access-key", AWS_AKID, "--aws-secret-key", AWS_SECRET,
        "--vertex-access-token", VERTEX_TOKEN])
    yield fake
    fake.stop()


def outcomes_config(url):
    capped = {"max_output_tokens": CAP}
    return {"clouds": {
        "openai": {"provider": "openai", "auth": {"api_key_env": "PFS_TEST_OPENAI_KEY"},
                   "regions": {"us": {"geo": "us", "endpoint": url + "/v1", "models": {
                       "gpt-4o": dict(capped), "gpt-4o-uncapped": {"id": "gpt-4o"}}}}},
        "azure": {"provider": "azure", "auth": {"api_key_env": "PFS_OUT_AZURE_KEY"},
                  "regions": {"westeurope": {"geo": ["eu"], "endpoint": url, "models": {
                      "gpt-4o": dict(capped, id="gpt-4o-prod", api_version="2024-10-21")}}}},
        "aws": {"provider": "bedrock",
                "auth": {"access_key_id_env": "PFS_OUT_AWS_AKID",
                         "secret_access_key_env": "PFS_OUT_AWS_SECRET"},
                "regions": {"eu-central-1": {"geo": "eu", "endpoint": url, "models": {
                    "claude-sonnet": dict(
                        capped, id="eu.anthropic.claude-3-7-sonnet-20250219-v1:0")}}}},
        "gcp": {"provider": "vertex", "project": "acme-prod",
                "auth": {"access_token_env": "PFS_OUT_VERTEX_TOKEN"},
                "regions": {"europe-west4": {"geo": "eu", "endpoint": url, "models": {
                    "gemini-2.0-flash": dict(capped)}}}},
        "anthropic": {"provider": "anthropic", "auth": {"api_key_env": "PFS_OUT_ANTHROPIC_KEY"},
                      "regions": {"us": {"geo": "us", "endpoint": url, "models": {
                          "claude-sonnet": dict(capped, id="claude-sonnet-4-20250514")}}}},
    }}


@pytest.fixture
def m(mount_factory, cloud):
    env = {"PFS_OUT_AZURE_KEY": AZURE_KEY, "PFS_OUT_ANTHROPIC_KEY": ANTHROPIC_KEY,
           "PFS_OUT_AWS_AKID": AWS_AKID, "PFS_OUT_AWS_SECRET": AWS_SECRET,
           "PFS_OUT_VERTEX_TOKEN": VERTEX_TOKEN}
    return mount_factory(config=outcomes_config(cloud.url), env=env)


def last_request(cloud, provider, prompt_text):
    """The body of the last request PROVIDER got for PROMPT_TEXT (its last
    user message), as the fake received it."""
    digest = hashlib.sha256(prompt_text.encode()).hexdigest()
    url = "%s/_last?prompt=%s&provider=%s" % (cloud.url, digest, provider)
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)["body"]
    except urllib.error.HTTPError as e:
        raise AssertionError("the fake saw no %s request for %r (%d)" % (provider, prompt_text,
                                                                         e.code))


def requests_for(cloud, prompt_text):
    digest = hashlib.sha256(prompt_text.encode()).hexdigest()
    return cloud.stats()["by_prompt"].get(digest, 0)


def token_limit(provider, body):
    """The answer's token limit in PROVIDER's own field of BODY."""
    if provider == "bedrock":
        return body["inferenceConfig"]["maxTokens"]
    if provider == "vertex":
        return body["generationConfig"]["maxOutputTokens"]
    return body["max_tokens"]  # openai, azure, anthropic


def write_prompt(d, name, text):
    with open(os.path.join(d, name + ".prompt"), "w") as f:
        f.write(text)


def json_prompt(content, max_tokens):
    return json.dumps({"messages": [{"role": "user", "content": content}],
                       "max_tokens": max_tokens})


# ---- a filtered Bedrock answer --------------------------------------------------------

@pytest.mark.parametrize("stop_reason,who", [
    ("content_filtered", "content filter"),
    ("guardrail_intervened", "guardrail"),
])
def test_bedrock_filtered_answer_fails_with_eio(m, cloud, stop_reason, who):
    d = os.path.join(m.path, DEPLOYMENTS["bedrock"])
    text = "tell me something risky [[fault:finish reason=%s]]" % stop_reason
    write_prompt(d, "f", text)
    # the text streamed before the stop reason came is not an answer
    data, err = read_all(d + "/f.response")
    assert err == errno.EIO, (data, err)
    r = sh("cat %s/f.response" % d, check=False)
    assert r.returncode != 0 and b"Input/output error" in r.stderr
    meta = wait_finished(d, "f")
    assert meta["status"] == "failed"
    assert meta["finish_reason"] == "content_filter"
    assert [a["outcome"] for a in meta["attempts"]] == ["content_filter"]
    first = open(d + "/f.error").readline()
    assert who in first and stop_reason in first, first
    # final: neither retried nor sent again
    assert requests_for(cloud, text) == 1


def test_bedrock_plain_answer_is_not_filtered(m):
    """The control case: the same prompt without the fault is an answer."""
    d = os.path.join(m.path, DEPLOYMENTS["bedrock"])
    write_prompt(d, "p", "tell me something harmless")
    assert read_all(d + "/p.response") == (b"echo: tell me something harmless", 0)
    meta = read_meta(d + "/p.meta")
    assert meta["status"] == "done" and meta["finish_reason"] == "stop"


# ---- the deployment's token cap ------------------------------------------------------

@pytest.mark.parametrize("provider", sorted(DEPLOYMENTS))
def test_token_cap_reaches_every_provider(m, cloud, provider):
    d = os.path.join(m.path, DEPLOYMENTS[provider])
    for asked, sent in ((500, CAP), (20, 20)):
        content = "cap %s asks %d" % (provider, asked)
        write_prompt(d, "c%d" % asked, json_prompt(content, asked))
        assert read_all(d + "/c%d.response" % asked) == (("echo: " + content).encode(), 0)
        assert token_limit(provider, last_request(cloud, provider, content)) == sent, \
            (provider, asked)


def test_no_cap_sends_what_the_prompt_asks(m, cloud):
    d = os.path.join(m.path, UNCAPPED)
    content = "uncapped asks 500"
    write_prompt(d, "u", json_prompt(content, 500))
    assert read_all(d + "/u.response") == (("echo: " + content).encode(), 0)
    assert last_request(cloud, "openai", content)["max_tokens"] == 500


def test_cap_applies_to_a_prompt_without_max_tokens(m, cloud):
    for provider in ("bedrock", "vertex", "anthropic"):
        d = os.path.join(m.path, DEPLOYMENTS[provider])
        content = "no limit asked of %s" % provider
        write_prompt(d, "n", content)
        assert read_all(d + "/n.response")[1] == 0
        assert token_limit(provider, last_request(cloud, provider, content)) == CAP


# ---- time to first byte in .meta -----------------------------------------------------

def test_meta_attempts_carry_ttfb_ms(m):
    d = os.path.join(m.path, DEPLOYMENTS["openai"])
    write_prompt(d, "t", "how fast")
    assert read_all(d + "/t.response")[1] == 0
    attempts = read_meta(d + "/t.meta")["attempts"]
    assert len(attempts) == 1
    ttfb = attempts[0]["ttfb_ms"]
    assert isinstance(ttfb, int) and not isinstance(ttfb, bool)
    assert 0 <= ttfb <= attempts[0]["ms"]


@pytest.mark.parametrize("provider", sorted(DEPLOYMENTS))
def test_ttfb_measures_the_first_byte(m, provider):
    d = os.path.join(m.path, DEPLOYMENTS[provider])
    write_prompt(d, "s", "slow start %s [[fault:slow_first_byte seconds=0.4]]" % provider)
    assert read_all(d + "/s.response")[1] == 0
    (attempt,) = read_meta(d + "/s.meta")["attempts"]
    assert attempt["outcome"] == "ok"
    assert 380 <= attempt["ttfb_ms"] <= attempt["ms"]


def test_ttfb_only_where_an_answer_came(m):
    d = os.path.join(m.path, DEPLOYMENTS["openai"])
    write_prompt(d, "r", "reset then 503 then ok "
                 "[[fault:reset times=1]][[fault:status code=503 times=2 retry_after=0]]")
    assert read_all(d + "/r.response")[1] == 0
    attempts = read_meta(d + "/r.meta")["attempts"]
    assert [a["outcome"] for a in attempts] == ["connection", "http_503", "ok"]
    assert "ttfb_ms" not in attempts[0]  # no byte ever came
    for a in attempts[1:]:  # an error answer is an answer too
        assert isinstance(a["ttfb_ms"], int) and 0 <= a["ttfb_ms"] <= a["ms"]
