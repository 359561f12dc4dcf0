"""Retry discipline and circuit breaking through the mount (SPEC §7,
docs/contract.md): what is retried and what is final, how long the daemon
waits between attempts, how a rate-limited deployment slows every job sent
to it, and how a deployment that keeps failing is skipped for a cool-down
and probed back. Every timing assertion is a lower bound taken from the
fake cloud's own request log (the gap between two requests it received),
with upper bounds only on counts: a loaded machine makes things slower,
never faster.

The module runs its own fake cloud: its deployments' faults are switched
at run time (/_faults) and its log (/_requests) must hold this module's
requests only."""
import calendar
import errno
import re
import os
import time
import urllib.parse

import pytest

from conftest import FakeCloud, read_all, read_meta, wait_finished, wait_for, prompt_digest

AZURE_KEY = "azure-key-for-retry-tests"
# the circuit's first cool-down in these tests (mount option breaker_cooldown=)
COOLDOWN = 3.0


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    cloud = FakeCloud(str(tmp_path_factory.mktemp("fakecloud-retry")))
    yield cloud
    cloud.stop()


@pytest.fixture(autouse=True)
def no_faults_left(fake):
    yield
    control(fake, "/_faults", method="DELETE")


def control(fake, path, body=None, method=None):
    return fake.control(path, body, method)


def set_faults(fake, path, faults, model=None):
    """Every request whose path contains PATH (and to MODEL) gets FAULTS."""
    control(fake, "/_faults", {"path": path, "model": model, "faults": faults})


def requests(fake, **filters):
    """The fake's log of API requests, oldest arrival first."""
    query = urllib.parse.urlencode({k: v for k, v in filters.items() if v is not None})
    found = control(fake, "/_requests?" + query)["requests"]
    return sorted(found, key=lambda e: e["t"])


def of_prompt(fake, text):
    return requests(fake, prompt=prompt_digest(text))


def gaps(entries):
    """Seconds between the arrivals of consecutive requests."""
    return [b["t"] - a["t"] for a, b in zip(entries, entries[1:])]


def config(fake):
    url = fake.url
    return {"clouds": {
        "openai": {"provider": "openai", "auth": {"api_key_env": "PFS_TEST_OPENAI_KEY"},
                   "regions": {
                       "us": {"geo": "us", "endpoint": url + "/us/v1",
                              "models": {"gpt-4o": {}}},
                       "eu": {"geo": "eu", "endpoint": url + "/eu/v1",
                              "models": {"gpt-4o": {}}},
                       "down": {"geo": "eu", "endpoint": url + "/down/v1",
                                "models": {"gpt-4o": {}}},
                       "ok": {"geo": "us", "endpoint": url + "/ok/v1",
                              "models": {"gpt-4o": {}}}}},
        # two deployments of one family in a geo of their own: any/xx/fam/
        # tries p1, then p2
        "routed": {"provider": "openai", "auth": {"api_key_env": "PFS_TEST_OPENAI_KEY"},
                   "regions": {
                       "p1": {"geo": "xx", "endpoint": url + "/p1/v1",
                              "models": {"m": {"id": "gpt-4o", "family": "fam"}}},
                       "p2": {"geo": "xx", "endpoint": url + "/p2/v1",
                              "models": {"m": {"id": "gpt-4o", "family": "fam"}}}}},
        "azure": {"provider": "azure", "auth": {"api_key_env": "PFS_RETRY_AZURE_KEY"},
                  "regions": {"westeurope": {"geo": "eu", "endpoint": url + "/az", "models": {
                      "gpt-4o": {"id": "gpt-4o-prod", "api_version": "2024-10-21"}}}}},
    }}


@pytest.fixture
def m(mount_factory, fake):
    return mount_factory(config=config(fake), options=["breaker_cooldown=%g" % COOLDOWN],
                         env={"PFS_RETRY_AZURE_KEY": AZURE_KEY})


def write_prompt(d, name, text):
    with open(os.path.join(d, name + ".prompt"), "w") as f:
        f.write(text)


def answer(d, name):
    return read_all(os.path.join(d, name + ".response"))


def outcomes(d, name):
    return [a["outcome"] for a in wait_finished(d, name, timeout=60).get("attempts", [])]


def assert_healthy(m, name):
    """After each scenario a healthy prompt still succeeds, at once."""
    d = m.model("openai", "ok", "gpt-4o")
    text = "healthy after %s %f" % (name, time.time())
    write_prompt(d, name, text)
    assert answer(d, name) == (("echo: " + text).encode(), 0)
    assert outcomes(d, name) == ["ok"]


def test_429_with_retry_after_2_waits_2_s(m, fake):
    d = m.model("openai", "us", "gpt-4o")
    text = "rate limited once [[fault:status code=429 times=1 retry_after=2]]"
    write_prompt(d, "r", text)
    assert answer(d, "r") == (("echo: " + text).encode(), 0)
    assert outcomes(d, "r") == ["http_429", "ok"]
    seen = of_prompt(fake, text)
    assert [e["status"] for e in seen] == [429, 200]
    # no retry before 1.8 s (Retry-After: 2)
    assert gaps(seen)[0] >= 1.8, gaps(seen)
    assert_healthy(m, "after-429")


def test_reset_header_is_a_hint(m, fake):
    """A 429 without Retry-After whose headers say the request limit
    resets in 2 s (OpenAI's x-ratelimit-reset-requests) waits that long."""
    d = m.model("openai", "us", "gpt-4o")
    text = "limit resets [[fault:status code=429 times=1 reset_after=2]]"
    write_prompt(d, "r", text)
    assert answer(d, "r") == (("echo: " + text).encode(), 0)
    seen = of_prompt(fake, text)
    assert [e["status"] for e in seen] == [429, 200]
    assert gaps(seen)[0] >= 1.8, gaps(seen)


def test_retry_after_0_keeps_the_floor_for_every_job(m, fake):
    """The issue's case: 100 prompts against a deployment answering 429
    with Retry-After: 0 to everything sent 300 requests in 0.63 s. Each
    job still makes its 3 attempts, but never two within the exponential
    minimum (0.5 s, then 1 s), so the wave lasts seconds, not 0.6 s."""
    d = m.model("openai", "eu", "gpt-4o")
    set_faults(fake, "/eu/", ["status code=429 retry_after=0"])
    since = time.time()
    texts = ["flood %d of 100" % i for i in range(100)]
    for i, text in enumerate(texts):
        write_prompt(d, "f%d" % i, text)
    for i in range(100):
        assert answer(d, "f%d" % i)[1] == errno.EIO
    seen = requests(fake, path="/eu/", since=since)
    assert len(seen) == 300
    assert all(e["status"] == 429 for e in seen)
    for i, text in enumerate(texts):
        mine = of_prompt(fake, text)
        assert len(mine) == 3
        first, second = gaps(mine)
        assert first >= 0.45 and second >= 0.95, (text, gaps(mine))
        assert outcomes(d, "f%d" % i) == ["http_429"] * 3
    assert seen[-1]["t"] - seen[0]["t"] >= 1.4
    assert "HTTP 429" in open(d + "/f0.error").readline()
    set_faults(fake, "/eu/", [])
    assert_healthy(m, "after-flood")


def test_a_429_slows_every_job_sent_there(m, fake):
    """A job that never saw the 429 waits for the deployment's turn too."""
    d = m.model("openai", "eu", "gpt-4o")
    set_faults(fake, "/eu/", ["status code=429 retry_after=0 times=1"])
    first = "first in line %f" % time.time()
    write_prompt(d, "a", first)
    # the daemon has taken the 429 in once .meta lists the attempt
    assert wait_for(lambda: read_meta(d + "/a.meta").get("attempts"), 30)
    second = "came later %f" % time.time()
    write_prompt(d, "b", second)
    assert answer(d, "a") == (("echo: " + first).encode(), 0)
    assert answer(d, "b") == (("echo: " + second).encode(), 0)
    limited = of_prompt(fake, first)[0]
    assert limited["status"] == 429
    later = of_prompt(fake, second)
    assert len(later) == 1 and later[0]["status"] == 200
    # not before the floor after the 429, though b never saw one
    assert later[0]["t"] - limited["t_end"] >= 0.45, later[0]["t"] - limited["t_end"]
    assert outcomes(d, "b") == ["ok"]


def test_persistent_429_backs_off_growing(m, fake):
    d = m.model("openai", "us", "gpt-4o")
    os.setxattr(d, "user.policy.retries", b"3")
    text = "always limited [[fault:status code=429]]"
    write_prompt(d, "p", text)
    assert answer(d, "p")[1] == errno.EIO
    assert outcomes(d, "p") == ["http_429"] * 4
    seen = of_prompt(fake, text)
    assert len(seen) == 4
    g = gaps(seen)
    # the floors of retries 1, 2 and 3: 0.5, 1 and 2 s
    assert g[0] >= 0.45 and g[1] >= 0.95 and g[2] >= 1.9, g
    os.removexattr(d, "user.policy.retries")
    assert_healthy(m, "after-persistent-429")


def test_500_once_then_ok(m, fake):
    d = m.model("openai", "us", "gpt-4o")
    text = "hiccup [[fault:status code=500 times=1]]"
    write_prompt(d, "h", text)
    assert answer(d, "h") == (("echo: " + text).encode(), 0)
    assert outcomes(d, "h") == ["http_500", "ok"]
    seen = of_prompt(fake, text)
    assert [e["status"] for e in seen] == [500, 200]
    assert gaps(seen)[0] >= 0.45
    assert_healthy(m, "after-500")


def test_context_length_exceeded_is_one_attempt(m, fake):
    d = m.model("openai", "us", "gpt-4o")
    text = ('too long [[fault:status code=400 type=invalid_request_error '
            'message="This model\'s maximum context length is 128000 tokens. However, your '
            'messages resulted in 200000 tokens."]]')
    write_prompt(d, "c", text)
    assert answer(d, "c")[1] == errno.EIO
    assert outcomes(d, "c") == ["context_length"]
    assert len(of_prompt(fake, text)) == 1
    # the provider's reason, on the first line of .error
    first = open(d + "/c.error").readline()
    assert "maximum context length is 128000 tokens" in first, first
    assert_healthy(m, "after-context-length")


def test_content_filter_is_one_attempt(m, fake):
    # Azure refuses the prompt (400 content_filter) ...
    d = m.model("azure", "westeurope", "gpt-4o")
    text = "filtered prompt [[fault:content_filter]]"
    write_prompt(d, "cf", text)
    assert answer(d, "cf")[1] == errno.EIO
    assert outcomes(d, "cf") == ["content_filter"]
    assert len(of_prompt(fake, text)) == 1
    assert "content filter" in open(d + "/cf.error").readline()
    # ... OpenAI cuts the answer (finish_reason content_filter)
    d = m.model("openai", "us", "gpt-4o")
    text = "filtered answer [[fault:finish reason=content_filter]]"
    write_prompt(d, "cf", text)
    assert answer(d, "cf")[1] == errno.EIO
    assert outcomes(d, "cf") == ["content_filter"]
    assert len(of_prompt(fake, text)) == 1
    assert_healthy(m, "after-content-filter")


def submit_until_sent(m, fake, prefix, limit=60):
    """Submits a prompt to the failing deployment every 0.3 s until one is
    sent (the circuit let a probe through); every earlier one must fail at
    once without a request. Returns (the prompt's name, text, its requests)."""
    d = m.model("openai", "down", "gpt-4o")
    deadline = time.time() + limit
    i = 0
    while time.time() < deadline:
        name = "%s%d" % (prefix, i)
        text = "%s %d %f" % (prefix, i, time.time())
        write_prompt(d, name, text)
        meta = wait_finished(d, name, timeout=60)
        sent = of_prompt(fake, text)
        if sent:
            return name, text, sent, meta
        # skipped: failed at once, without a request, naming the circuit
        assert meta["status"] == "failed" and not meta.get("attempts"), meta
        assert answer(d, name)[1] == errno.EIO
        error = open(os.path.join(d, name + ".error")).readline()
        assert error.startswith("Not sent: openai/down/gpt-4o is skipped"), error
        i += 1
        time.sleep(0.3)
    raise AssertionError("no probe within %d s" % limit)


def test_failing_deployment_is_skipped_then_probed_back(m, fake):
    d = m.model("openai", "down", "gpt-4o")
    since = time.time()
    set_faults(fake, "/down/", ["status code=503"])
    # 3 attempts of the first job, 2 of the second: the fifth failure in a
    # row opens the circuit, and the second job ends without its third
    write_prompt(d, "j1", "first")
    assert answer(d, "j1")[1] == errno.EIO
    assert outcomes(d, "j1") == ["http_503"] * 3
    write_prompt(d, "j2", "second")
    assert answer(d, "j2")[1] == errno.EIO
    assert outcomes(d, "j2") == ["http_503"] * 2
    error = open(d + "/j2.error").readline()
    assert "HTTP 503" in error
    assert "then openai/down/gpt-4o is skipped for" in error
    assert "after 5 failed attempts in a row" in error
    fifth = requests(fake, path="/down/", since=since)[-1]
    assert len(requests(fake, path="/down/", since=since)) == 5

    # open: a job there fails at once, with the reason, and sends nothing
    write_prompt(d, "j3", "third")
    assert answer(d, "j3")[1] == errno.EIO
    meta = read_meta(d + "/j3.meta")
    assert meta["status"] == "failed" and not meta.get("attempts")
    error = open(d + "/j3.error").readline()
    assert error.startswith("Not sent: openai/down/gpt-4o is skipped for"), error
    assert "(circuit open)" in error
    # .meta lists it too, as a candidate skipped with the reason
    (skipped,) = meta["skipped"]
    assert skipped.startswith("openai/down/gpt-4o skipped: circuit open until "), skipped
    assert len(requests(fake, path="/down/", since=since)) == 5
    assert_healthy(m, "while-open")

    # after the cool-down, one probe; it fails: open again, twice as long
    name, text, sent, meta = submit_until_sent(m, fake, "probe")
    assert len(sent) == 1 and sent[0]["status"] == 503
    assert sent[0]["t"] - fifth["t_end"] >= COOLDOWN * 0.95, sent[0]["t"] - fifth["t_end"]
    assert [a["outcome"] for a in meta["attempts"]] == ["http_503"]
    assert "then openai/down/gpt-4o is skipped" in open(d + "/" + name + ".error").readline()
    # nothing reached it during the cool-down
    assert [e for e in requests(fake, path="/down/", since=since)
            if fifth["t_end"] < e["t"] < sent[0]["t"]] == []
    failed_probe = sent[0]

    # the deployment recovers; the next probe comes only after the doubled
    # cool-down, succeeds, and closes the circuit
    set_faults(fake, "/down/", [])
    name, text, sent, meta = submit_until_sent(m, fake, "back")
    assert len(sent) == 1 and sent[0]["status"] == 200
    assert sent[0]["t"] - failed_probe["t_end"] >= 2 * COOLDOWN * 0.95, \
        sent[0]["t"] - failed_probe["t_end"]
    assert answer(d, name) == (("echo: " + text).encode(), 0)
    # closed: the next job goes at once
    write_prompt(d, "after", "closed again")
    assert answer(d, "after") == (b"echo: closed again", 0)
    assert outcomes(d, "after") == ["ok"]
    assert_healthy(m, "after-probe")


# ---- with a second candidate (any/, failover) ------------------------------

def targets(d, name):
    meta = wait_finished(d, name, timeout=60)
    return [(a["target"], a["outcome"]) for a in meta.get("attempts", [])]


def test_a_wait_longer_than_the_time_left_fails_over(m, fake):
    d = m.path + "/any/xx/fam"
    os.setxattr(d, "user.policy.timeout_s", b"5")
    set_faults(fake, "/p1/", ["status code=429 retry_after=30"])
    text = "no time to wait %f" % time.time()
    write_prompt(d, "w", text)
    assert answer(d, "w") == (("echo: " + text).encode(), 0)
    assert targets(d, "w") == [("routed/p1/m", "http_429"), ("routed/p2/m", "ok")]
    (limited,) = requests(fake, path="/p1/", prompt=prompt_digest(text))
    (served,) = requests(fake, path="/p2/", prompt=prompt_digest(text))
    # it did not wait the 30 s it was asked (a generous bound)
    assert served["t"] - limited["t_end"] < 20
    # the next job does not even ask p1: its throttle outlasts the time left
    later = "later %f" % time.time()
    write_prompt(d, "l", later)
    assert answer(d, "l") == (("echo: " + later).encode(), 0)
    assert targets(d, "l") == [("routed/p2/m", "ok")]
    assert requests(fake, path="/p1/", prompt=prompt_digest(later)) == []
    skipped = read_meta(d + "/l.meta")
    assert skipped["route"] == "routed/p2/m"
    # .meta says why p1 was passed over (the wait left, in whole seconds)
    (why,) = skipped["skipped"]
    assert re.fullmatch(r"routed/p1/m skipped: it asked to wait \d+ s, longer than the 5 s an "
                        r"attempt may take", why), why
    assert_healthy(m, "after-long-wait")


def test_a_silent_deployment_is_not_retried_before_the_next(m, fake):
    d = m.path + "/any/xx/fam"
    os.setxattr(d, "user.policy.first_token_timeout_s", b"1")
    set_faults(fake, "/p1/", ["silence"])
    text = "anyone there %f" % time.time()
    write_prompt(d, "s", text)
    assert answer(d, "s") == (("echo: " + text).encode(), 0)
    # one attempt on p1 though 2 retries were allowed there, then p2
    assert targets(d, "s") == [("routed/p1/m", "first_token_timeout"), ("routed/p2/m", "ok")]
    assert len(requests(fake, path="/p1/", prompt=prompt_digest(text))) == 1
    assert_healthy(m, "after-silence")


def test_a_primary_down_for_a_while_then_back(m, fake):
    """Served by the fallback meanwhile, skipped while its circuit is open,
    back on the primary after the cool-down's probe."""
    d = m.path + "/any/xx/fam"
    since = time.time()
    set_faults(fake, "/p1/", ["status code=503"])
    write_prompt(d, "a", "first while down")
    assert answer(d, "a") == (b"echo: first while down", 0)
    assert targets(d, "a") == [("routed/p1/m", "http_503")] * 3 + [("routed/p2/m", "ok")]
    # the fifth failure in a row opens p1's circuit: on to p2 at once
    write_prompt(d, "b", "second while down")
    assert answer(d, "b") == (b"echo: second while down", 0)
    assert targets(d, "b") == [("routed/p1/m", "http_503")] * 2 + [("routed/p2/m", "ok")]
    fifth = requests(fake, path="/p1/", since=since)[-1]
    assert len(requests(fake, path="/p1/", since=since)) == 5
    # open: p1 is skipped, p2 serves with no time lost
    write_prompt(d, "c", "third while open")
    assert answer(d, "c") == (b"echo: third while open", 0)
    assert targets(d, "c") == [("routed/p2/m", "ok")]
    assert len(requests(fake, path="/p1/", since=since)) == 5

    # p1 comes back; jobs go to p2 until the cool-down ends, then one
    # probes p1 and the circuit closes
    set_faults(fake, "/p1/", [])
    deadline = time.time() + 60
    i = 0
    while True:
        assert time.time() < deadline, "p1 was never probed"
        name = "n%d" % i
        write_prompt(d, name, "next %d" % i)
        assert answer(d, name) == (b"echo: next %d" % i, 0)
        tried = targets(d, name)
        if tried[0][0] == "routed/p1/m":
            break
        assert tried == [("routed/p2/m", "ok")]
        i += 1
        time.sleep(0.3)
    assert tried == [("routed/p1/m", "ok")]
    probe = requests(fake, path="/p1/", since=since)[5]
    assert probe["status"] == 200
    assert probe["t"] - fifth["t_end"] >= COOLDOWN * 0.95, probe["t"] - fifth["t_end"]
    # closed: the primary serves again
    write_prompt(d, "z", "back on the primary")
    assert answer(d, "z") == (b"echo: back on the primary", 0)
    assert targets(d, "z") == [("routed/p1/m", "ok")]
    assert_healthy(m, "after-primary-back")


def circuit_open_until(skipped, target):
    """The Unix time in TARGET's entry of .meta's skipped list, which must
    say its circuit is open after 5 failed attempts in a row."""
    found = [s for s in skipped if s.startswith(target + " skipped: ")]
    assert len(found) == 1, skipped
    match = re.fullmatch(re.escape(target) + r" skipped: circuit open until "
                         r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ), "
                         r"after 5 failed attempts in a row", found[0])
    assert match, found[0]
    return calendar.timegm(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%SZ"))


def test_an_open_circuit_is_listed_in_meta(m, fake):
    """A candidate passed over because its circuit is open is named in
    .meta's skipped list with the reason, like one the budget cannot
    afford, whether the job is then served elsewhere or fails; it makes
    no attempt, so attempts does not list it, and the fake sees nothing."""
    d = m.path + "/any/xx/fam"
    since = time.time()
    set_faults(fake, "/p1/", ["status code=503"])
    write_prompt(d, "a", "opens the circuit")
    assert answer(d, "a")[1] == 0
    write_prompt(d, "b", "opens it for good")
    assert answer(d, "b")[1] == 0
    assert len(requests(fake, path="/p1/", since=since)) == 5
    opened = requests(fake, path="/p1/", since=since)[-1]["t_end"]

    # done: served by p2, p1 skipped with its reason
    text = "served past an open circuit %f" % time.time()
    write_prompt(d, "c", text)
    assert answer(d, "c") == (("echo: " + text).encode(), 0)
    meta = read_meta(d + "/c.meta")
    assert meta["status"] == "done" and meta["route"] == "routed/p2/m"
    assert targets(d, "c") == [("routed/p2/m", "ok")]
    until = circuit_open_until(meta["skipped"], "routed/p1/m")
    # the end of the cool-down, in whole seconds rounded up
    assert opened + COOLDOWN - 1 <= until <= opened + COOLDOWN + 10, (until, opened)
    assert requests(fake, path="/p1/", prompt=prompt_digest(text)) == []

    # failed: p2 refuses the prompt; p1 is still listed, and .error says it
    text = "refused past an open circuit %f [[fault:status code=400]]" % time.time()
    write_prompt(d, "f", text)
    assert answer(d, "f")[1] == errno.EIO
    meta = read_meta(d + "/f.meta")
    assert meta["status"] == "failed"
    assert targets(d, "f") == [("routed/p2/m", "http_400")]
    circuit_open_until(meta["skipped"], "routed/p1/m")
    assert "routed/p1/m is skipped for" in open(d + "/f.error").readline()
    assert requests(fake, path="/p1/", prompt=prompt_digest(text)) == []
    assert len(requests(fake, path="/p1/", since=since)) == 5


def test_breaker_mount_options(mount_factory, fake):
    """-o breaker_failures=2,breaker_cooldown=2: the second failed attempt
    in a row opens the circuit, and the probe goes about 2 s later (a
    lower bound from the fake's log; the upper bound only catches the
    default 30 s)."""
    m = mount_factory(config=config(fake), options=["breaker_failures=2", "breaker_cooldown=2"],
                      env={"PFS_RETRY_AZURE_KEY": AZURE_KEY})
    d = m.model("openai", "down", "gpt-4o")
    since = time.time()
    set_faults(fake, "/down/", ["status code=503"])
    # 3 attempts allowed; the circuit opens after 2 and the job ends
    write_prompt(d, "j1", "two strikes")
    assert answer(d, "j1")[1] == errno.EIO
    assert outcomes(d, "j1") == ["http_503"] * 2
    assert "after 2 failed attempts in a row" in open(d + "/j1.error").readline()
    second = requests(fake, path="/down/", since=since)[-1]
    assert len(requests(fake, path="/down/", since=since)) == 2

    set_faults(fake, "/down/", [])
    name, text, sent, meta = submit_until_sent(m, fake, "probe", limit=25)
    assert len(sent) == 1 and sent[0]["status"] == 200
    waited = sent[0]["t"] - second["t_end"]
    assert 2 * 0.95 <= waited < 20, waited
    assert answer(d, name) == (("echo: " + text).encode(), 0)
