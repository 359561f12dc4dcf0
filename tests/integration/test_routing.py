"""The routed view and failover (SPEC §4, §7): any/<geo>/<family>/ comes from
the config; a prompt there is served by an eligible deployment of the
family in the order the policy says, failing over between clouds on a
retryable failure; a pinned path fails over only with `fallback`; nothing
ever goes to a deployment outside the effective providers and residency;
a failover's budget follows the candidate's price.

Three clouds of different providers serve the family "chat" in the geo
"eu" (azure, then openai, then anthropic in config order), one more "chat"
is in "us"; fault directives naming a provider make one cloud fail."""
import errno
import json
import os

import pytest

from conftest import FakeCloud, prompt_digest, read_all, read_meta, sh, wait_finished

AZURE_KEY = "azure-key-routing"
ANTHROPIC_KEY = "anthropic-key-routing"


@pytest.fixture(scope="module")
def fake3(tmp_path_factory):
    cloud = FakeCloud(str(tmp_path_factory.mktemp("routing")),
                      ["--azure-key", AZURE_KEY, "--anthropic-key", ANTHROPIC_KEY])
    yield cloud
    cloud.stop()


def routing_config(url):
    return {"clouds": {
        "az": {"provider": "azure", "auth": {"api_key_env": "PFS_AZURE_KEY"},
               "regions": {"weu": {"geo": ["eu"], "endpoint": url, "models": {
                   "gpt": {"id": "gpt-4o-prod", "family": "chat",
                           "price": {"input_per_mtok": 5, "output_per_mtok": 20}}}}}},
        "oa": {"provider": "openai", "auth": {"api_key_env": "PFS_TEST_OPENAI_KEY"},
               "regions": {"eu": {"geo": "eu", "endpoint": url + "/v1", "models": {
                   "gpt": {"id": "gpt-4o", "family": "chat",
                           "price": {"input_per_mtok": 1, "output_per_mtok": 2}}}},
                           "us": {"geo": "us", "endpoint": url + "/v1", "models": {
                               "gpt": {"id": "gpt-4o", "family": "chat"}}}}},
        "an": {"provider": "anthropic", "auth": {"api_key_env": "PFS_ANTHROPIC_KEY"},
               "regions": {"eu": {"geo": "eu", "endpoint": url, "models": {
                   "claude": {"id": "claude-sonnet-4-20250514", "family": "chat",
                              "price": {"input_per_mtok": 3, "output_per_mtok": 15}}}}}},
    }}


@pytest.fixture
def routed(mount_factory, fake3):
    return mount_factory(config=routing_config(fake3.url),
                         env={"PFS_AZURE_KEY": AZURE_KEY, "PFS_ANTHROPIC_KEY": ANTHROPIC_KEY})


def ask(d, name, text):
    with open(os.path.join(d, name + ".prompt"), "w") as f:
        f.write(text)
    data, err = read_all(os.path.join(d, name + ".response"))
    return data, err, read_meta(os.path.join(d, name + ".meta"))


def targets(meta):
    return [(a["target"], a["outcome"]) for a in meta.get("attempts", [])]


def test_the_routed_view_comes_from_the_config(routed):
    m = routed
    assert sorted(os.listdir(m.path)) == [".metrics", ".usage", "an", "any", "az", "oa"]
    assert sorted(os.listdir(m.path + "/any")) == [".usage", "eu", "us"]
    assert os.listdir(m.path + "/any/eu") == [".usage", "chat"] or \
        sorted(os.listdir(m.path + "/any/eu")) == [".usage", "chat"]
    for call in (lambda: os.mkdir(m.path + "/any/apac"),
                 lambda: os.rmdir(m.path + "/any/eu/chat"),
                 lambda: os.rename(m.path + "/any/eu", m.path + "/any/europe")):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EPERM
    with pytest.raises(FileNotFoundError):
        os.stat(m.path + "/any/eu/gpt")
    # workspaces, .policy and everything else work there
    os.mkdir(m.path + "/any/eu/chat/ws")
    data, err, meta = ask(m.path + "/any/eu/chat/ws", "q", "hello routed")
    assert (data, err) == (b"echo: hello routed", 0)
    assert meta["route"] == "az/weu/gpt" and meta["status"] == "done"


def test_failover_across_clouds_in_any(routed, fake3):
    d = routed.path + "/any/eu/chat"
    text = "[[fault:status code=503 provider=azure]] fail over %d" % id(routed)
    data, err, meta = ask(d, "f", text)
    assert err == 0 and data.endswith(b"fail over %d" % id(routed))
    assert meta["route"] == "oa/eu/gpt"
    # the default retries on azure (1 + 2), then openai
    assert targets(meta) == [("az/weu/gpt", "http_503")] * 3 + [("oa/eu/gpt", "ok")]
    # each retry and failover is a line in the log
    routed.wait_log("job f.prompt: retry to az/weu/gpt (attempt 2)")
    routed.wait_log("job f.prompt: retry to az/weu/gpt (attempt 3)")
    routed.wait_log("job f.prompt: failover to oa/eu/gpt (attempt 4)")
    # cost at the price of the deployment that answered
    usage = meta["usage"]
    assert meta["cost_usd"] == pytest.approx(
        (usage["input_tokens"] * 1 + usage["output_tokens"] * 2) / 1e6)


def test_a_pinned_path_fails_over_only_with_fallback(routed):
    d = routed.path + "/az/weu/gpt"
    text = "[[fault:status code=503 provider=azure]] pinned %d" % id(routed)
    data, err, meta = ask(d, "p", text)
    assert err == errno.EIO and meta["status"] == "failed"
    # a failed job names the provider's request id, as a ticket needs
    assert meta.get("request_id"), meta
    assert {t for t, _ in targets(meta)} == {"az/weu/gpt"}
    os.setxattr(d, "user.policy.fallback", b"true")
    data, err, meta = ask(d, "p2", text + " again")
    assert err == 0 and meta["route"] == "oa/eu/gpt"
    # the pinned deployment is tried first, the family's others after
    assert targets(meta)[0][0] == "az/weu/gpt"


def test_residency_and_providers_hold_even_when_everything_fails(routed, fake3):
    d = routed.path + "/any/eu/chat"
    os.setxattr(d, "user.policy.providers", b"az,an")
    before = fake3.stats()["by_provider"].get("openai", {})
    text = ("[[fault:status code=503 provider=azure]] [[fault:status code=503 "
            "provider=anthropic]] nowhere %d" % id(routed))
    data, err, meta = ask(d, "n", text)
    assert err == errno.EIO and meta["status"] == "failed"
    assert {t for t, _ in targets(meta)} == {"az/weu/gpt", "an/eu/claude"}
    assert fake3.stats()["by_provider"].get("openai", {}) == before
    error = open(d + "/n.error").read()
    assert "az/weu/gpt" in error and "an/eu/claude" in error and "oa/" not in error
    # a family with no allowed deployment is refused at open
    os.setxattr(routed.path + "/any/us", "user.policy.providers", b"az")
    with pytest.raises(OSError) as e:
        os.open(routed.path + "/any/us/chat/x.prompt", os.O_WRONLY | os.O_CREAT, 0o644)
    assert e.value.errno == errno.EACCES
    assert "allow no deployment of chat in us" in open(routed.path + "/any/us/chat/x.error").read()


def test_order_by_price(routed):
    d = routed.path + "/any/eu/chat"
    os.setxattr(d, "user.policy.order", b"price")
    os.setxattr(d, "user.policy.max_output_tokens", b"100")
    data, err, meta = ask(d, "cheap", "cheapest first")
    assert err == 0 and meta["route"] == "oa/eu/gpt"
    text = "[[fault:status code=503 provider=openai]] then the next %d" % id(routed)
    data, err, meta = ask(d, "next", text)
    # openai (1/2), then anthropic (3/15), then azure (5/20)
    assert meta["route"] == "an/eu/claude"
    assert [t for t, _ in targets(meta)][-1] == "an/eu/claude"


def test_a_failover_budget_follows_the_candidates_price(routed):
    d = routed.path + "/any/eu/chat"
    os.setxattr(d, "user.policy.order", b"price")
    os.setxattr(d, "user.policy.max_output_tokens", b"100")
    # room for openai's worst case (about 0.00023), not anthropic's (0.0016)
    os.setxattr(d, "user.policy.budget_usd", b"0.001")
    text = "[[fault:status code=503 provider=openai]] over budget %d" % id(routed)
    data, err, meta = ask(d, "b", text)
    assert err == errno.EIO and meta["status"] == "failed"
    assert {t for t, _ in targets(meta)} == {"oa/eu/gpt"}
    assert any("an/eu/claude skipped" in s and "budget_usd 0.001" in s
               for s in meta.get("skipped", [])), meta
    usage = json.loads(open(d + "/.usage").read())
    assert usage["reserved_usd"] == 0


def test_readers_of_a_cut_attempt_get_eio_and_a_new_reader_the_whole_answer(routed):
    d = routed.path + "/any/eu/chat"
    text = "[[fault:cut after=5 provider=azure]] cut then served %d" % id(routed)
    with open(d + "/c.prompt", "w") as f:
        f.write(text)
    wait_finished(d, "c")
    meta = read_meta(d + "/c.meta")
    assert meta["status"] == "done" and meta["route"] == "oa/eu/gpt"
    assert ("az/weu/gpt", "stream_cut") in targets(meta)
    assert read_all(d + "/c.response") == (("echo: " + text).encode(), 0)


def test_500_prompts_with_one_cloud_failing_half_of_them(routed, fake3):
    d = routed.path + "/any/eu/chat"
    os.mkdir(d + "/many")
    # half of them (the even ones) get 503 from azure, the first candidate
    texts = ["%s many %d %d" % ("[[fault:status code=503 provider=azure]]" if i % 2 == 0
                                else "", i, id(routed)) for i in range(500)]
    # written by 16 shells at once, as a batch would
    for i, text in enumerate(texts):
        with open(os.path.join(routed.workdir, "t%03d" % i), "w") as f:
            f.write(text)
    sh("seq -f '%%03g' 0 499 | xargs -P 16 -I{} cp %s/t{} %s/many/p{}.prompt"
       % (routed.workdir, d), timeout=300)
    for i, text in enumerate(texts):
        meta = wait_finished(d + "/many", "p%03d" % i, timeout=120)
        assert meta["status"] == "done", (i, meta)
        assert open("%s/many/p%03d.response" % (d, i)).read() == "echo: " + text
    # none answered twice
    completions = fake3.completions()
    assert all(completions.get(prompt_digest(t), 0) == 1 for t in texts)
