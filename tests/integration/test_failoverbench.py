"""failoverbench: the sixteen failure scenarios of SPEC §7 through the
mount, in one suite (issue 9). Each scenario writes a prompt with open,
write and close, reads its .response, .meta and .error, and counts its
attempts per deployment and the gaps between them from the fake cloud's
own request log (/_requests). After each scenario a healthy prompt in the
same directory still succeeds. Across all of them, no request ever goes to
a deployment outside the effective residency (the residency invariant).

Every scenario has a family of its own, fNN, with three deployments:
`az/sNN/m` (Azure, geo eu, the primary), `oa/sNN/m` (OpenAI, geo eu, the
fallback) and `far/sNN/m` (OpenAI, geo us, the cheapest and first in the
config, so that it would be the first fallback were residency ignored).
Odd scenarios write to `any/eu/fNN/`, even ones to the pinned `az/sNN/m/`,
which fails over because `az/.policy` sets `fallback` and keeps
`residency` to eu. Separate deployments keep the scenarios' circuit
breakers and throttles apart, so the sixteen run at once, each in a thread
of its own, and each test waits for its scenario's thread.

Timing assertions are lower bounds taken from the fake's log, or upper
bounds far above what is expected: a loaded machine makes things slower,
never faster. With FAILOVERBENCH_TABLE=PATH in the environment, the suite
writes the measured table (attempts per deployment, time to the end,
outcomes) to PATH as Markdown."""
import concurrent.futures
import errno
import json
import math
import os
import shutil
import tempfile
import time
import urllib.parse

import pytest

from conftest import FakeCloud, Mount, long_answer, prompt_digest, read_all, read_meta, wait_for

AZURE_KEY = "azure-key-failoverbench"
# the circuit's first cool-down in this suite (the test-only knob of
# docs/testing.md)
COOLDOWN = 2.0
# prices (USD per million tokens, input and output)
PRICES = {"az": (5.0, 20.0), "oa": (1.0, 2.0), "far": (0.1, 0.2)}
NAMES = {
    1: "429 with Retry-After: 2",
    2: "persistent 429 without a hint",
    3: "500 once",
    4: "persistent 503",
    5: "connection reset before headers",
    6: "no response at all (silence)",
    7: "slow first token",
    8: "stream cut mid-answer",
    9: "stream stall mid-answer",
    10: "malformed chunk",
    11: "missing [DONE]",
    12: "context length exceeded",
    13: "content filter",
    14: "failover after a cut stream",
    15: "primary down, then back",
    16: "failover accounting",
}
SCENARIOS = sorted(NAMES)


# ---- the fake cloud, the config and the mount ------------------------------

def bench_config(url):
    def deployments(prefix, geo, endpoint, model_id, price):
        return {"s%02d" % k: {"geo": geo, "endpoint": endpoint("%s%02d" % (prefix, k)),
                              "models": {"m": {"id": model_id, "family": "f%02d" % k,
                                               "price": {"input_per_mtok": price[0],
                                                         "output_per_mtok": price[1]}}}}
                for k in SCENARIOS}

    return {"clouds": {
        "far": {"provider": "openai", "auth": {"api_key_env": "PFS_TEST_OPENAI_KEY"},
                "regions": deployments("far", "us", lambda p: "%s/%s/v1" % (url, p),
                                       "gpt-4o", PRICES["far"])},
        "az": {"provider": "azure", "auth": {"api_key_env": "PFS_BENCH_AZURE_KEY"},
               "regions": deployments("az", "eu", lambda p: "%s/%s" % (url, p),
                                      "gpt-4o-prod", PRICES["az"])},
        "oa": {"provider": "openai", "auth": {"api_key_env": "PFS_TEST_OPENAI_KEY"},
               "regions": deployments("oa", "eu", lambda p: "%s/%s/v1" % (url, p),
                                      "gpt-4o", PRICES["oa"])},
    }}


def control(fake, path, body=None, method=None):
    return fake.control(path, body, method)


def logged(fake, **filters):
    """The fake's log of API requests, oldest arrival first."""
    query = urllib.parse.urlencode({k: v for k, v in filters.items() if v is not None})
    return sorted(control(fake, "/_requests?" + query)["requests"], key=lambda e: e["t"])


def deployment_of(entry):
    """The deployment a logged request went to: "az", "oa" or "far"."""
    return entry["path"].split("/")[1][:-2]


def gaps(entries):
    """Seconds between the arrivals of consecutive requests."""
    return [b["t"] - a["t"] for a, b in zip(entries, entries[1:])]


class Scenario:
    """One scenario's directory, its prompts and what was measured."""

    def __init__(self, bench, k):
        self.bench = bench
        self.fake = bench.fake
        self.k = k
        self.routed = k % 2 == 1
        self.dir = (bench.mount.path + "/any/eu/f%02d" % k if self.routed
                    else bench.mount.model("az", "s%02d" % k, "m"))
        self.row = {"k": k, "scenario": NAMES[k], "path": self.dir[len(bench.mount.path):]}

    def target(self, cloud):
        return "%s/s%02d/m" % (cloud, self.k)

    def policy(self, **keys):
        with open(self.dir + "/.policy", "w") as f:
            json.dump(keys, f)

    def write(self, name, text):
        """Submits TEXT as NAME.prompt; returns when close() returned."""
        fd = os.open(os.path.join(self.dir, name + ".prompt"),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def ask(self, name, text):
        """Submits TEXT and reads the whole answer as cat does; returns
        (bytes, errno or 0, seconds from open() of the prompt to the job's
        end, .meta). The reader's EIO may come from an attempt thrown
        away; the end is then what a new reader sees."""
        t0 = time.time()
        self.write(name, text)
        data, err = read_all(os.path.join(self.dir, name + ".response"))
        if err:
            self.reread(name)
        elapsed = time.time() - t0
        meta = self.meta(name)
        return data, err, elapsed, meta

    def meta(self, name):
        path = os.path.join(self.dir, name + ".meta")
        assert wait_for(lambda: read_meta(path)["status"] not in ("queued", "running"), 60), \
            "job %s did not end" % name
        return read_meta(path)

    def error(self, name):
        with open(os.path.join(self.dir, name + ".error")) as f:
            return f.read()

    def sent(self, text, count=0):
        """The fake's log of the requests that carried TEXT, once it holds
        COUNT of them (it logs a request when its answer has ended, which
        for a client that left may be later)."""
        wait_for(lambda: len(logged(self.fake, prompt=prompt_digest(text))) >= count, 30)
        return logged(self.fake, prompt=prompt_digest(text))

    def reread(self, name):
        """A new reader's whole read of NAME.response."""
        return read_all(os.path.join(self.dir, name + ".response"))

    def record(self, text, elapsed, meta):
        """Puts what TEXT's job did in the table's row."""
        seen = self.sent(text, count=len(meta.get("attempts", [])))
        counts = {}
        for e in seen:
            counts[deployment_of(e)] = counts.get(deployment_of(e), 0) + 1
        self.row.update(per_deployment=counts, seconds=elapsed, status=meta["status"],
                        gaps=gaps(seen),
                        outcomes=[a["outcome"] for a in meta.get("attempts", [])])

    def healthy(self):
        """After each scenario a healthy prompt there still succeeds."""
        text = "healthy after scenario %d %f" % (self.k, time.time())
        data, err, _, meta = self.ask("healthy", text)
        assert (data, err) == (("echo: " + text).encode(), 0), (data, err, meta)
        assert meta["status"] == "done", meta
        self.row["healthy"] = "ok"


def assert_reader_of_a_retried_answer(s, name, text, data, err):
    """A reader during a job whose streaming attempt was thrown away:
    EIO once it had bytes of that attempt, else the answer; a reader
    opened after the job ended gets the answer, whole."""
    answer = ("echo: " + text).encode()
    assert (data, err) == (answer, 0) or (err == errno.EIO and data and
                                          answer.startswith(data)), (data, err)
    assert s.reread(name) == (answer, 0)
    s.row["first reader"] = "EIO" if err else "whole"


def attempts(meta):
    return [(a["target"], a["outcome"]) for a in meta.get("attempts", [])]


def where(entries):
    """The deployments logged ENTRIES went to, in order."""
    return [deployment_of(e) for e in entries]


# ---- the scenarios ----------------------------------------------------------

def scenario_1(s):
    """429 with Retry-After: 2: no retry on the deployment before 1.8 s;
    then it answers."""
    s.policy(timeout_s=10)
    text = "s1 [[fault:status code=429 times=1 retry_after=2 provider=azure]]"
    data, err, elapsed, meta = s.ask("p", text)
    s.record(text, elapsed, meta)
    assert (data, err) == (("echo: " + text).encode(), 0)
    assert attempts(meta) == [(s.target("az"), "http_429"), (s.target("az"), "ok")]
    seen = s.sent(text)
    assert [(deployment_of(e), e["status"]) for e in seen] == [("az", 429), ("az", 200)]
    assert gaps(seen)[0] >= 1.8, gaps(seen)
    assert elapsed >= 1.8


def scenario_2(s):
    """A persistent 429 without a hint: retries + 1 attempts on the
    deployment, backing off exponentially, then the next eligible one
    answers."""
    s.policy(retries=2, timeout_s=10)
    text = "s2 [[fault:status code=429 provider=azure]]"
    data, err, elapsed, meta = s.ask("p", text)
    s.record(text, elapsed, meta)
    assert (data, err) == (("echo: " + text).encode(), 0)
    assert attempts(meta) == [(s.target("az"), "http_429")] * 3 + [(s.target("oa"), "ok")]
    assert meta["route"] == s.target("oa")
    seen = s.sent(text)
    assert [(deployment_of(e), e["status"]) for e in seen] == [("az", 429)] * 3 + [("oa", 200)]
    g = gaps(seen[:3])
    # the exponential floors of retries 1 and 2: 0.5 and 1 s
    assert g[0] >= 0.45 and g[1] >= 0.95, g


def scenario_3(s):
    """500 once: one retry on the same deployment, which answers."""
    text = "s3 [[fault:status code=500 times=1 provider=azure]]"
    data, err, elapsed, meta = s.ask("p", text)
    s.record(text, elapsed, meta)
    assert (data, err) == (("echo: " + text).encode(), 0)
    assert attempts(meta) == [(s.target("az"), "http_500"), (s.target("az"), "ok")]
    seen = s.sent(text)
    assert [(deployment_of(e), e["status"]) for e in seen] == [("az", 500), ("az", 200)]
    assert gaps(seen)[0] >= 0.45, gaps(seen)


def scenario_4(s):
    """A persistent 503: the retries on the deployment, then failover."""
    text = "s4 [[fault:status code=503 provider=azure]]"
    data, err, elapsed, meta = s.ask("p", text)
    s.record(text, elapsed, meta)
    assert (data, err) == (("echo: " + text).encode(), 0)
    assert attempts(meta) == [(s.target("az"), "http_503")] * 3 + [(s.target("oa"), "ok")]
    seen = s.sent(text)
    assert [(deployment_of(e), e["status"]) for e in seen] == [("az", 503)] * 3 + [("oa", 200)]
    g = gaps(seen[:3])
    assert g[0] >= 0.45 and g[1] >= 0.95, g


def scenario_5(s):
    """A connection reset before any header is retryable: retried on the
    deployment, then failed over. One attempt is one request: the
    prompt before it leaves a connection to reuse, which libcurl would
    otherwise resend the request on at once, unseen in .meta."""
    warm = "s5 before %f" % time.time()
    assert s.ask("w", warm)[:2] == (("echo: " + warm).encode(), 0)
    text = "s5 [[fault:reset provider=azure]]"
    data, err, elapsed, meta = s.ask("p", text)
    s.record(text, elapsed, meta)
    assert (data, err) == (("echo: " + text).encode(), 0)
    assert attempts(meta) == [(s.target("az"), "connection")] * 3 + [(s.target("oa"), "ok")]
    seen = s.sent(text)
    assert [(deployment_of(e), e["status"]) for e in seen] == \
        [("az", "reset")] * 3 + [("oa", 200)]
    g = gaps(seen[:3])
    assert g[0] >= 0.45 and g[1] >= 0.95, g


def scenario_6(s):
    """No response at all: the attempt ends at timeout_s, and the silent
    deployment is not asked again before the next eligible one was."""
    s.policy(timeout_s=3)
    text = "s6 [[fault:silence provider=azure]]"
    data, err, elapsed, meta = s.ask("p", text)
    s.record(text, elapsed, meta)
    assert (data, err) == (("echo: " + text).encode(), 0)
    assert attempts(meta) == [(s.target("az"), "timeout"), (s.target("oa"), "ok")]
    seen = s.sent(text)
    assert [(deployment_of(e), e["status"]) for e in seen] == \
        [("az", "silence"), ("oa", 200)]
    # bounded by timeout_s: not before it, and far from the mount's 20 s
    assert 2.9 <= meta["attempts"][0]["ms"] / 1000 < 10, meta["attempts"]
    assert 2.9 <= seen[1]["t"] - seen[0]["t"] < 10, gaps(seen)


def scenario_7(s):
    """A first token later than first_token_timeout_s fails the attempt;
    the job fails over."""
    s.policy(first_token_timeout_s=2, timeout_s=10)
    text = "s7 [[fault:slow_first_byte seconds=6 provider=azure]]"
    data, err, elapsed, meta = s.ask("p", text)
    s.record(text, elapsed, meta)
    assert (data, err) == (("echo: " + text).encode(), 0)
    assert attempts(meta) == [(s.target("az"), "first_token_timeout"), (s.target("oa"), "ok")]
    seen = s.sent(text, count=2)
    assert where(seen) == ["az", "oa"]
    assert 1.9 <= meta["attempts"][0]["ms"] / 1000 < 5.5, meta["attempts"]
    # it did not wait for the slow first byte
    assert seen[1]["t"] - seen[0]["t"] < 5.8, gaps(seen)


def scenario_8(s):
    """A stream cut mid-answer is retried; a reader gets the whole answer
    of the attempt that succeeded."""
    text = "s8 a stream cut once mid-answer [[fault:cut after=8 times=1 provider=azure]]"
    data, err, elapsed, meta = s.ask("p", text)
    s.record(text, elapsed, meta)
    assert_reader_of_a_retried_answer(s, "p", text, data, err)
    assert attempts(meta) == [(s.target("az"), "stream_cut"), (s.target("az"), "ok")]
    seen = s.sent(text)
    assert [(deployment_of(e), e["status"]) for e in seen] == [("az", "200-cut"), ("az", 200)]
    assert gaps(seen)[0] >= 0.45, gaps(seen)


def scenario_9(s):
    """A stream that stalls mid-answer is ended by timeout_s and retried
    elsewhere first."""
    s.policy(timeout_s=3)
    text = "s9 a stream that stalls [[fault:stall after=8 seconds=8 provider=azure]]"
    data, err, elapsed, meta = s.ask("p", text)
    s.record(text, elapsed, meta)
    assert_reader_of_a_retried_answer(s, "p", text, data, err)
    assert attempts(meta) == [(s.target("az"), "timeout"), (s.target("oa"), "ok")]
    seen = s.sent(text, count=2)
    assert where(seen) == ["az", "oa"]
    # bounded by timeout_s, not by the stall's 8 s
    assert 2.9 <= meta["attempts"][0]["ms"] / 1000 < 7.5, meta["attempts"]
    assert seen[1]["t"] - seen[0]["t"] < 7.5, gaps(seen)


def scenario_10(s):
    """A malformed chunk fails the attempt; the retry answers."""
    text = "s10 a garbled chunk [[fault:malformed times=1 provider=azure]]"
    data, err, elapsed, meta = s.ask("p", text)
    s.record(text, elapsed, meta)
    assert_reader_of_a_retried_answer(s, "p", text, data, err)
    assert attempts(meta) == [(s.target("az"), "malformed"), (s.target("az"), "ok")]
    assert where(s.sent(text)) == ["az", "az"]


def scenario_11(s):
    """A stream complete but for its [DONE] marker ends at once: one
    attempt, done, the whole answer, no wait for timeout_s."""
    s.policy(timeout_s=20)
    text = "s11 no end marker [[fault:no_done provider=azure]]"
    data, err, elapsed, meta = s.ask("p", text)
    s.record(text, elapsed, meta)
    assert (data, err) == (("echo: " + text).encode(), 0)
    assert meta["status"] == "done" and meta["finish_reason"] == "stop", meta
    assert attempts(meta) == [(s.target("az"), "ok")]
    assert where(s.sent(text)) == ["az"]
    # well under timeout_s
    assert meta["attempts"][0]["ms"] / 1000 < 5 and elapsed < 10, (elapsed, meta)


def scenario_12(s):
    """Context length exceeded: one attempt in all, no failover, the
    provider's reason in .error, EIO for the reader."""
    message = ("This model's maximum context length is 128000 tokens. However, your "
               "messages resulted in 200000 tokens.")
    text = ('s12 [[fault:status code=400 type=invalid_request_error provider=azure '
            'message="%s"]]' % message)
    data, err, elapsed, meta = s.ask("p", text)
    s.record(text, elapsed, meta)
    assert (data, err) == (b"", errno.EIO)
    assert meta["status"] == "failed"
    assert attempts(meta) == [(s.target("az"), "context_length")]
    assert where(s.sent(text)) == ["az"]
    assert message in s.error("p").splitlines()[0], s.error("p")
    # every reader, also a later one
    assert read_all(os.path.join(s.dir, "p.response")) == (b"", errno.EIO)


def scenario_13(s):
    """Azure's content filter refuses the prompt: one attempt, no
    failover, the filter's reason in .error."""
    text = "s13 [[fault:content_filter]]"
    data, err, elapsed, meta = s.ask("p", text)
    s.record(text, elapsed, meta)
    assert (data, err) == (b"", errno.EIO)
    assert meta["status"] == "failed"
    assert attempts(meta) == [(s.target("az"), "content_filter")]
    assert where(s.sent(text)) == ["az"]
    first = s.error("p").splitlines()[0]
    assert "content filter" in first and "jailbreak" in first, first


def scenario_14(s):
    """Failover after a cut stream: a reader that got bytes of the cut
    attempt gets EIO, a reader opened after it the fallback's whole
    answer, and .response is exactly that answer."""
    s.policy(retries=0)
    # the primary sends 12 bytes, pauses (so that the reader surely has
    # them), sends a few more and is cut; the fallback's answer is longer
    text = ("s14 cut then served elsewhere [[fault:stall after=12 seconds=2 provider=azure]] "
            "[[fault:cut after=20 provider=azure]] [[fault:long bytes=300 provider=openai]]")
    fallback = long_answer(text, 300).encode()
    t0 = time.time()
    s.write("p", text)
    fd = os.open(os.path.join(s.dir, "p.response"), os.O_RDONLY)
    try:
        first = os.read(fd, 4096)
        assert first and fallback.startswith(first), first
        with pytest.raises(OSError) as e:
            while os.read(fd, 4096):
                pass
        assert e.value.errno == errno.EIO
    finally:
        os.close(fd)
    s.row["first reader"] = "EIO"
    data, err = read_all(os.path.join(s.dir, "p.response"))
    elapsed = time.time() - t0
    meta = s.meta("p")
    s.record(text, elapsed, meta)
    assert (data, err) == (fallback, 0)
    assert os.stat(os.path.join(s.dir, "p.response")).st_size == len(fallback)
    assert attempts(meta) == [(s.target("az"), "stream_cut"), (s.target("oa"), "ok")]
    assert meta["route"] == s.target("oa")
    seen = s.sent(text)
    assert [(deployment_of(e), e["status"]) for e in seen] == [("az", "200-cut"), ("oa", 200)]
    # the fallback answered once, whole
    assert s.fake.completions().get(prompt_digest(text)) == 1


def scenario_15(s):
    """A primary down for a while, then back: the fallback serves
    meanwhile, the open circuit skips the primary, and after the cool-down
    one probe goes to the primary, which serves again."""
    path = "/az15/"
    t0 = time.time()
    control(s.fake, "/_faults", {"path": path, "faults": ["status code=503"]})
    try:
        # 3 failed attempts of the first job, 2 of the second: the fifth
        # failure in a row opens the primary's circuit
        for name, n in (("a", 3), ("b", 2)):
            text = "s15 %s while down" % name
            data, err, _, meta = s.ask(name, text)
            assert (data, err) == (("echo: " + text).encode(), 0)
            assert attempts(meta) == [(s.target("az"), "http_503")] * n + [(s.target("oa"), "ok")]
        fifth = logged(s.fake, path=path)[-1]
        assert len(logged(s.fake, path=path)) == 5
        # open: skipped without a request
        data, err, _, meta = s.ask("c", "s15 c while open")
        assert (data, err) == (b"echo: s15 c while open", 0)
        assert attempts(meta) == [(s.target("oa"), "ok")]
        assert len(logged(s.fake, path=path)) == 5
    finally:
        control(s.fake, "/_faults", {"path": path, "faults": []})
    # back: jobs go to the fallback until the cool-down ends, then one
    # probes the primary and closes the circuit
    deadline = time.time() + 60
    i = 0
    while True:
        assert time.time() < deadline, "the primary was never probed"
        text = "s15 next %d" % i
        data, err, _, meta = s.ask("n%d" % i, text)
        assert (data, err) == (("echo: " + text).encode(), 0)
        if attempts(meta)[0][0] == s.target("az"):
            break
        assert attempts(meta) == [(s.target("oa"), "ok")]
        i += 1
        time.sleep(0.2)  # lets the cool-down pass between submissions
    assert attempts(meta) == [(s.target("az"), "ok")]
    probe = logged(s.fake, path=path)[5]
    assert probe["status"] == 200
    assert probe["t"] - fifth["t_end"] >= COOLDOWN * 0.95, probe["t"] - fifth["t_end"]
    text = "s15 back on the primary"
    data, err, elapsed, meta = s.ask("z", text)
    assert (data, err) == (("echo: " + text).encode(), 0)
    assert attempts(meta) == [(s.target("az"), "ok")]
    s.row.update(per_deployment={"az": len(logged(s.fake, path=path)),
                                 "oa": len(logged(s.fake, path="/oa15/"))},
                 seconds=time.time() - t0, status="done",
                 outcomes=["%d jobs; probe after %.1f s" % (i + 5, probe["t"] - fifth["t_end"])])


def scenario_16(s):
    """Failover accounting: route, usage and cost name the fallback; the
    failed attempts are not billed; .usage agrees."""
    text = "s16 who pays [[fault:status code=503 provider=azure]]"
    data, err, elapsed, meta = s.ask("p", text)
    s.record(text, elapsed, meta)
    assert (data, err) == (("echo: " + text).encode(), 0)
    assert attempts(meta) == [(s.target("az"), "http_503")] * 3 + [(s.target("oa"), "ok")]
    assert meta["route"] == s.target("oa")
    # the fake's usage: ceil(bytes / 4) of the prompt and of the answer
    usage = {"input_tokens": math.ceil(len(text.encode()) / 4),
             "output_tokens": math.ceil(len(data) / 4)}
    assert meta["usage"] == usage, meta
    price_in, price_out = PRICES["oa"]
    cost = (usage["input_tokens"] * price_in + usage["output_tokens"] * price_out) / 1e6
    assert meta["cost_usd"] == pytest.approx(cost, abs=1e-9), meta
    with open(s.dir + "/.usage") as f:
        spent = json.load(f)
    assert spent["spent_usd"] == pytest.approx(cost, abs=1e-9), spent
    assert spent["reserved_usd"] == 0, spent
    assert spent["requests"] == {"done": 1, "failed": 0}, spent
    assert spent["tokens"] == {"input": usage["input_tokens"],
                               "output": usage["output_tokens"]}, spent
    s.row["outcomes"] = s.row["outcomes"] + ["cost %.6f" % meta["cost_usd"]]


# ---- running them -----------------------------------------------------------

class Bench:
    def __init__(self, fake, mount):
        self.fake = fake
        self.mount = mount
        self.rows = {}
        self.futures = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(SCENARIOS))

    def start(self, ks):
        for k in ks:
            s = Scenario(self, k)
            self.rows[k] = s.row
            self.futures[k] = self.pool.submit(self.run, s)

    def run(self, s):
        fn = globals()["scenario_%d" % s.k]
        try:
            fn(s)
        except BaseException:
            s.row["status"] = "FAILED (%s)" % s.row.get("status", "before the end")
            raise
        s.healthy()

    def result(self, k):
        return self.futures[k].result(timeout=240)

    def table(self):
        lines = ["| # | scenario | path | attempts per deployment | gaps between requests (s) "
                 "| time to end (s) | status | outcomes | healthy after |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for k in sorted(self.rows):
            r = self.rows[k]
            per = ", ".join("%s %d" % (d, n) for d, n in sorted(
                r.get("per_deployment", {}).items(), key=lambda i: ("az", "oa", "far").index(i[0])))
            seconds = "%.2f" % r["seconds"] if "seconds" in r else "-"
            status = r.get("status", "-")
            if r.get("first reader") == "EIO":
                status += " (a reader during the thrown-away attempt: EIO)"
            between = ", ".join("%.2f" % g for g in r.get("gaps", [])) or "-"
            lines.append("| %d | %s | `%s` | %s | %s | %s | %s | %s | %s |" % (
                k, r["scenario"], r["path"], per or "-", between, seconds, status,
                ", ".join(r.get("outcomes", [])) or "-", r.get("healthy", "-")))
        return "\n".join(lines) + "\n"


def selected_scenarios(session):
    """The scenarios this run's selected tests ask for; all of them when
    none is selected (the residency test alone needs every one)."""
    ks = set()
    for item in session.items:
        if item.module.__name__ == __name__ and hasattr(item, "callspec"):
            ks.add(item.callspec.params.get("k"))
    ks.discard(None)
    return sorted(ks) or SCENARIOS


@pytest.fixture(scope="module")
def bench(request, tmp_path_factory):
    fake = FakeCloud(str(tmp_path_factory.mktemp("fakecloud-failoverbench")),
                     ["--azure-key", AZURE_KEY])
    base = tempfile.mkdtemp(prefix="promptfs-failoverbench-")
    os.chmod(base, 0o755)
    try:
        mount = Mount(base, bench_config(fake.url),
                      options=("timeout=20", "breaker_cooldown=%d" % COOLDOWN),
                      env={"PFS_BENCH_AZURE_KEY": AZURE_KEY})
    except Exception:
        fake.stop()
        raise
    # pinned prompts fail over, but only within eu
    with open(mount.path + "/az/.policy", "w") as f:
        json.dump({"fallback": True, "residency": ["eu"]}, f)
    b = Bench(fake, mount)
    b.start(selected_scenarios(request.session))
    yield b
    # a scenario still blocked in a read ends with the unmount below
    b.pool.shutdown(wait=False, cancel_futures=True)
    table = os.environ.get("FAILOVERBENCH_TABLE")
    if table:
        with open(table, "w") as f:
            f.write(b.table())
    code = mount.unmount()
    reports = mount.sanitizer_reports()
    fake.stop()
    problems = []
    if code != 0:
        problems.append("promptfs exited %d:\n%s" % (code, open(mount.log).read()[-4000:]))
    if reports:
        problems.append("sanitizer report:\n" + reports[-8000:])
    if not problems:
        shutil.rmtree(base, ignore_errors=True)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("k", SCENARIOS, ids=["%02d" % k for k in SCENARIOS])
def test_scenario(bench, k):
    bench.result(k)


def test_residency_invariant(bench):
    """Across every scenario, no request went to a deployment outside the
    effective residency: far/ (geo us) was never contacted, though it is
    of each family, first in the config and the cheapest."""
    for k in list(bench.futures):
        try:
            bench.result(k)
        except Exception:
            pass  # its own test reports it
    seen = logged(bench.fake)
    assert seen, "no request was logged"
    assert {deployment_of(e) for e in seen} <= {"az", "oa"}, \
        sorted({e["path"] for e in seen if deployment_of(e) not in ("az", "oa")})
    assert logged(bench.fake, path="/far") == []
