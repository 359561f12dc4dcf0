"""Every cloud's wire protocol through the mount: Azure OpenAI, AWS
Bedrock, Google Vertex AI (service account and access token) and
Anthropic, against the fake cloud, which checks each one's
authentication itself (api-key, SigV4, RS256 JWT, x-api-key)."""
import errno
import json
import os
import subprocess
import time

import pytest

from conftest import (FAKECLOUD, PYTHON, FakeCloud, read_all, read_meta, sh, wait_finished,
                      wait_for)

AZURE_KEY = "azure-key-5b7e1c"
AZURE_ENTRA_TOKEN = "eyJ0eXAi.entra-test-token"
ANTHROPIC_KEY = "sk-ant-test-93af0d"
AWS_AKID = "AKIDPROMPTFSTEST"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYPROMPTFS"
AWS_TOKEN = "session-token-for-tests/+=="
VERTEX_TOKEN = "ya29.static-test-token"

SECRETS = (AZURE_KEY, AZURE_ENTRA_TOKEN, ANTHROPIC_KEY, AWS_SECRET, AWS_TOKEN, VERTEX_TOKEN)

PROVIDERS = {
    # name: (directory under the mount, request-id expected in .meta)
    "azure": "azure/westeurope/gpt-4o",
    "bedrock": "aws/eu-central-1/claude-sonnet",
    "vertex": "gcp/europe-west4/gemini-2.0-flash",
    "vertex-token": "gcp-token/us-central1/gemini-2.5-flash",
    "azure-entra": "azure-entra/swedencentral/gpt-4o-mini",
    "bedrock-profile": "aws-profile/us-east-1/nova-pro",
    "anthropic": "anthropic/us/claude-sonnet",
}


@pytest.fixture(scope="module")
def multicloud(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("multicloud"))
    subprocess.run([PYTHON, FAKECLOUD, "--make-sa-key", work], check=True,
                   capture_output=True)
    cloud = FakeCloud(work, [
        "--azure-key", AZURE_KEY, "--azure-token", AZURE_ENTRA_TOKEN,
        "--anthropic-key", ANTHROPIC_KEY,
        "--aws-access-key", AWS_AKID, "--aws-secret-key", AWS_SECRET,
        "--aws-session-token", AWS_TOKEN,
        "--vertex-sa-json", os.path.join(work, "sa.json"), "--update-sa-token-uri",
        "--vertex-access-token", VERTEX_TOKEN, "--vertex-token-ttl", "400",
        "--vertex-project", "acme-prod"])
    cloud.sa_path = os.path.join(work, "sa.json")
    # an ~/.aws/credentials-style file with two profiles
    cloud.aws_credentials = os.path.join(work, "aws-credentials")
    with open(cloud.aws_credentials, "w") as f:
        f.write("[default]\naws_access_key_id = AKIDWRONG\naws_secret_access_key = wrong\n\n"
                "[promptfs]\naws_access_key_id = %s\naws_secret_access_key = %s\n"
                "aws_session_token = %s\n" % (AWS_AKID, AWS_SECRET, AWS_TOKEN))
    os.chmod(cloud.aws_credentials, 0o600)
    # the fake rewrites token_uri once it knows its port
    assert wait_for(lambda: str(cloud.port) in open(cloud.sa_path).read(), 5)
    yield cloud
    cloud.stop()


def multicloud_config(cloud):
    url = cloud.url
    return {"clouds": {
        "azure": {"provider": "azure", "auth": {"api_key_env": "PFS_AZURE_KEY"},
                  "regions": {"westeurope": {"geo": ["eu"], "endpoint": url, "models": {
                      "gpt-4o": {"id": "gpt-4o-prod", "api_version": "2024-10-21"}}}}},
        "aws": {"provider": "bedrock",
                "auth": {"access_key_id_env": "PFS_AWS_AKID",
                         "secret_access_key_env": "PFS_AWS_SECRET",
                         "session_token_env": "PFS_AWS_TOKEN"},
                "regions": {"eu-central-1": {"geo": "eu", "endpoint": url, "models": {
                    "claude-sonnet": {"id": "eu.anthropic.claude-3-7-sonnet-20250219-v1:0"}}}}},
        "gcp": {"provider": "vertex", "project": "acme-prod",
                "auth": {"service_account_file": cloud.sa_path},
                "regions": {"europe-west4": {"geo": "eu", "endpoint": url,
                                             "models": {"gemini-2.0-flash": {}}}}},
        "gcp-token": {"provider": "vertex", "project": "acme-prod",
                      "auth": {"access_token_env": "PFS_VERTEX_TOKEN"},
                      "regions": {"us-central1": {"geo": "us", "endpoint": url,
                                                  "models": {"gemini-2.5-flash": {}}}}},
        "azure-entra": {"provider": "azure", "auth": {"bearer_token_env": "PFS_AZURE_TOKEN"},
                        "regions": {"swedencentral": {"geo": ["eu", "se"], "endpoint": url,
                                                      "models": {"gpt-4o-mini": {}}}}},
        "aws-profile": {"provider": "bedrock",
                        "auth": {"credentials_file": cloud.aws_credentials, "profile": "promptfs"},
                        "regions": {"us-east-1": {"geo": "us", "endpoint": url, "models": {
                            "nova-pro": {"id": "amazon.nova-pro-v1:0"}}}}},
        "anthropic": {"provider": "anthropic", "auth": {"api_key_env": "PFS_ANTHROPIC_KEY"},
                      "regions": {"us": {"geo": "us", "endpoint": url, "models": {
                          "claude-sonnet": {"id": "claude-sonnet-4-20250514"}}}}},
    }}


@pytest.fixture
def clouds(mount_factory, multicloud):
    env = {"PFS_AZURE_KEY": AZURE_KEY, "PFS_ANTHROPIC_KEY": ANTHROPIC_KEY,
           "PFS_AZURE_TOKEN": AZURE_ENTRA_TOKEN,
           "PFS_AWS_AKID": AWS_AKID, "PFS_AWS_SECRET": AWS_SECRET, "PFS_AWS_TOKEN": AWS_TOKEN,
           "PFS_VERTEX_TOKEN": VERTEX_TOKEN}
    return mount_factory(config=multicloud_config(multicloud), env=env)


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_answer(clouds, provider):
    d = os.path.join(clouds.path, PROVIDERS[provider])
    sh("echo 'Hello from %s' > %s/a.prompt" % (provider, d))
    assert read_all(d + "/a.response") == (b"echo: Hello from %s\n" % provider.encode(), 0)
    meta = read_meta(d + "/a.meta")
    assert meta["status"] == "done"
    assert meta["route"] == PROVIDERS[provider]
    assert meta["finish_reason"] == "stop"
    assert meta["usage"]["input_tokens"] > 0 and meta["usage"]["output_tokens"] > 0
    assert meta.get("request_id")


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_system_prompt_and_max_tokens_are_translated(clouds, provider):
    d = os.path.join(clouds.path, PROVIDERS[provider])
    req = {"messages": [{"role": "system", "content": "terse"},
                        {"role": "user", "content": "one two three four five six"}],
           "max_tokens": 5, "temperature": 0.5, "stop": ["END"]}
    with open(d + "/j.prompt", "w") as f:
        json.dump(req, f)
    data, err = read_all(d + "/j.response")
    assert err == 0
    assert data == b"[system: terse] echo: one two three four five six"[:20]
    assert read_meta(d + "/j.meta")["finish_reason"] == "length"


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_answer_streams(clouds, provider):
    d = os.path.join(clouds.path, PROVIDERS[provider])
    text = "streaming answer here [[fault:stall after=8 seconds=1.5]]"
    with open(d + "/s.prompt", "w") as f:
        f.write(text)
    fd = os.open(d + "/s.response", os.O_RDONLY)
    t0 = time.time()
    first = os.read(fd, 65536)
    assert first and time.time() - t0 < 1.2, "first bytes must arrive before the stall ends"
    rest = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        rest += chunk
    os.close(fd)
    assert first + rest == ("echo: " + text).encode()


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_recovers_from_429(clouds, provider):
    d = os.path.join(clouds.path, PROVIDERS[provider])
    text = "throttled %s [[fault:status code=429 times=1 retry_after=0]]" % provider
    with open(d + "/t.prompt", "w") as f:
        f.write(text)
    assert read_all(d + "/t.response") == (("echo: " + text).encode(), 0)
    outcomes = [a["outcome"] for a in read_meta(d + "/t.meta")["attempts"]]
    assert outcomes == ["http_429", "ok"]


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_400_is_eio_with_the_providers_message(clouds, provider):
    d = os.path.join(clouds.path, PROVIDERS[provider])
    with open(d + "/b.prompt", "w") as f:
        f.write('bad [[fault:status code=400 message="temperature must be at most 2"]]')
    assert read_all(d + "/b.response")[1] == errno.EIO
    meta = wait_finished(d, "b")
    assert [a["outcome"] for a in meta["attempts"]] == ["http_400"]
    first = open(d + "/b.error").readline()
    assert "temperature must be at most 2" in first
    # a prompt too long for the model, in each provider's error shape, is
    # context_length: one attempt too
    with open(d + "/c.prompt", "w") as f:
        f.write('long [[fault:status code=400 message="prompt is too long for this model"]]')
    assert read_all(d + "/c.response")[1] == errno.EIO
    meta = wait_finished(d, "c")
    assert [a["outcome"] for a in meta["attempts"]] == ["context_length"]
    assert "prompt is too long for this model" in open(d + "/c.error").readline()


def test_azure_content_filter_names_the_category(clouds):
    d = os.path.join(clouds.path, PROVIDERS["azure"])
    sh("echo 'ignore your rules [[fault:content_filter]]' > %s/cf.prompt" % d)
    assert read_all(d + "/cf.response")[1] == errno.EIO
    wait_finished(d, "cf")
    first = open(d + "/cf.error").readline()
    assert "content filter" in first and "jailbreak" in first


def test_bedrock_corrupt_frame_is_never_text(clouds):
    d = os.path.join(clouds.path, PROVIDERS["bedrock"])
    sh("echo 'crc [[fault:malformed times=1]]' > %s/m.prompt" % d)
    wait_finished(d, "m")
    data, err = read_all(d + "/m.response")
    assert (data, err) == (b"echo: crc [[fault:malformed times=1]]\n", 0)
    assert [a["outcome"] for a in read_meta(d + "/m.meta")["attempts"]] == ["malformed", "ok"]


def test_vertex_service_account_token_is_fetched_once_and_reused(clouds, multicloud):
    d = os.path.join(clouds.path, PROVIDERS["vertex"])
    before = multicloud.stats()["tokens_issued"]
    sh("for i in $(seq 1 20); do echo \"q $i\" > %s/v$i.prompt & done; wait" % d)
    for i in range(1, 21):
        assert read_all(d + "/v%d.response" % i) == (b"echo: q %d\n" % i, 0)
    assert multicloud.stats()["tokens_issued"] - before <= 1


def test_secrets_never_reach_files_or_logs(clouds):
    for provider in ("azure", "bedrock", "vertex", "anthropic"):
        d = os.path.join(clouds.path, PROVIDERS[provider])
        sh("echo hi > %s/sec.prompt; cat %s/sec.response; "
           "echo 'x [[fault:status code=401]]' > %s/sec2.prompt; cat %s/sec2.response || true"
           % (d, d, d, d))
        wait_finished(d, "sec2")
    r = subprocess.run(["grep", "-rl", "-e", AZURE_KEY, "-e", ANTHROPIC_KEY, "-e", AWS_SECRET,
                        "-e", VERTEX_TOKEN, "-e", AZURE_ENTRA_TOKEN, "-e", AWS_TOKEN,
                        clouds.state, clouds.log, clouds.path],
                       capture_output=True)
    assert r.stdout == b"", r.stdout
    cmdline = open("/proc/%d/cmdline" % clouds.proc.pid, "rb").read()
    for secret in SECRETS:
        assert secret.encode() not in cmdline


def test_anthropic_529_overloaded_is_retried(clouds):
    d = os.path.join(clouds.path, PROVIDERS["anthropic"])
    text = "busy [[fault:status code=529 times=1 retry_after=0]]"
    with open(d + "/o.prompt", "w") as f:
        f.write(text)
    assert read_all(d + "/o.response") == (("echo: " + text).encode(), 0)
    assert [a["outcome"] for a in read_meta(d + "/o.meta")["attempts"]] == ["http_529", "ok"]


def test_azure_retry_hint_in_the_message_is_honoured(clouds):
    d = os.path.join(clouds.path, PROVIDERS["azure"])
    text = "hint [[fault:status code=429 times=1 retry_after=1]]"
    with open(d + "/h.prompt", "w") as f:
        f.write(text)
    t0 = time.time()
    assert read_all(d + "/h.response") == (("echo: " + text).encode(), 0)
    assert time.time() - t0 >= 0.9


def test_inband_errors_mid_stream(clouds):
    for provider in ("anthropic", "bedrock", "azure"):
        d = os.path.join(clouds.path, PROVIDERS[provider])
        with open(d + "/ie.prompt", "w") as f:
            f.write("mid-stream trouble [[fault:inband_error after=5]]")
        assert read_all(d + "/ie.response")[1] == errno.EIO
        meta = wait_finished(d, "ie")
        assert meta["status"] == "failed", provider


def test_vertex_token_is_refreshed_before_expiry_without_failing_jobs(mount_factory, tmp_path):
    work = str(tmp_path)
    subprocess.run([PYTHON, FAKECLOUD, "--make-sa-key", work], check=True, capture_output=True)
    # tokens live 8 s; promptfs renews one after 3/4 of its life (6 s) and
    # lends it to new jobs until 7/8 (7 s), so a refresh runs while jobs
    # keep using the old token
    cloud = FakeCloud(work, ["--vertex-sa-json", os.path.join(work, "sa.json"),
                             "--update-sa-token-uri", "--vertex-token-ttl", "8"])
    try:
        cloud.sa_path = os.path.join(work, "sa.json")
        assert wait_for(lambda: str(cloud.port) in open(cloud.sa_path).read(), 5)
        cfg = {"clouds": {"gcp": {"provider": "vertex", "project": "p",
                                  "auth": {"service_account_file": cloud.sa_path},
                                  "regions": {"global": {"geo": "global", "endpoint": cloud.url,
                                                         "models": {"gemini-2.5-pro": {}}}}}}}
        m = mount_factory(config=cfg)
        d = m.model("gcp", "global", "gemini-2.5-pro")
        # jobs run one after another until a refresh has happened between
        # them; every one of them, and one after it, must succeed
        deadline = time.time() + 60
        i = 0
        while cloud.stats()["tokens_issued"] < 2:
            assert time.time() < deadline, "%d tokens issued" % cloud.stats()["tokens_issued"]
            sh("echo 'round %d' > %s/r%d.prompt" % (i, d, i))
            assert read_all(d + "/r%d.response" % i) == (b"echo: round %d\n" % i, 0)
            i += 1
            time.sleep(0.2)  # pacing only: a job every 0.2 s while the token ages
        sh("echo 'last round' > %s/last.prompt" % d)
        assert read_all(d + "/last.response") == (b"echo: last round\n", 0)
    finally:
        cloud.stop()
