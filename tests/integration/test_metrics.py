"""`/.metrics` (SPEC §8, docs/contract.md): a read-only file at the root of
the mount only, in the Prometheus text format 0.0.4, that `promtool check
metrics` accepts; exact counters for the jobs run (attempts by outcome,
histogram counts equal to the attempts, retries, tokens and cost as .meta
says), every deployment listed at zero, the gauges of a job in flight
and of a parked read, and readable by any uid."""
import errno
import os
import re
import shutil
import subprocess
import threading
from decimal import Decimal

import pytest

from conftest import NOBODY, FakeCloud, default_config, read_all, sh, wait_finished, wait_for
from test_routing import ANTHROPIC_KEY, AZURE_KEY, routing_config

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def parse(text):
    """{(name, frozenset of labels, still escaped): value}, and {family:
    type}, checking the format on the way: every sample's family has HELP
    and TYPE lines before it, a family's samples are together, no sample
    is there twice."""
    samples, types, helps, seen_families = {}, {}, set(), []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helps.add(line.split()[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
            seen_families.append(name)
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        name, labels, value = m.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        if family not in types:
            family = name
        assert family == seen_families[-1], "%s outside its family" % name
        assert family in helps
        key = (name, frozenset(LABEL.findall(labels or "")))
        assert key not in samples, "%s twice" % line
        samples[key] = Decimal(value) if value != "+Inf" else value
    return samples, types


def metrics(m):
    with open(os.path.join(m.path, ".metrics")) as f:
        return f.read()


def dep(cloud, region, model, **extra):
    """The labels of a deployment's sample, with EXTRA ones."""
    return frozenset([("cloud", cloud), ("region", region), ("model", model)]
                     + list(extra.items()))


GPT = ("openai", "us", "gpt-4o")
DEPLOYMENTS = [GPT, ("openai", "us", "gpt-4o-mini"), ("local", "localhost", "llama3.2")]


def value(samples, name, deployment=None, **labels):
    key = (name, dep(*deployment, **labels) if deployment else frozenset(labels.items()))
    assert key in samples, "no sample %s %r" % (name, sorted(key[1]))
    return samples[key]


def check_with_promtool(text):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool (Debian package prometheus) is not installed and could not be "
                    "(tests/lib/deps.sh): the exposition format was checked by this test's "
                    "own parser only")
    r = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, "promtool check metrics: %s %s" % (r.stdout, r.stderr)


def test_metrics_count_the_jobs_run(mnt, fake):
    d = mnt.model(*GPT)
    # before anything ran: every deployment of the config, at zero
    samples, types = parse(metrics(mnt))
    for deployment in DEPLOYMENTS:
        assert value(samples, "promptfs_requests_total", deployment, outcome="ok") == 0
        assert value(samples, "promptfs_attempt_duration_seconds_count", deployment) == 0
        assert value(samples, "promptfs_circuit_state", deployment) == 0
        assert value(samples, "promptfs_cost_usd_total", deployment) == 0
    assert types["promptfs_attempt_duration_seconds"] == "histogram"
    assert types["promptfs_jobs_in_flight"] == "gauge"

    ok_text = "metrics ok %d" % id(mnt)
    bad_text = "[[fault:status code=500]] metrics bad %d" % id(mnt)
    flaky_text = "[[fault:status code=503 times=1]] metrics flaky %d" % id(mnt)
    for name, text in (("ok", ok_text), ("bad", bad_text), ("flaky", flaky_text)):
        with open(os.path.join(d, name + ".prompt"), "w") as f:
            f.write(text)
    metas = {name: wait_finished(d, name, timeout=60) for name in ("ok", "bad", "flaky")}
    assert metas["ok"]["status"] == "done" and metas["flaky"]["status"] == "done"
    assert metas["bad"]["status"] == "failed"
    assert [a["outcome"] for a in metas["bad"]["attempts"]] == ["http_500"] * 3
    assert [a["outcome"] for a in metas["flaky"]["attempts"]] == ["http_503", "ok"]

    text = metrics(mnt)
    samples, _ = parse(text)
    # one sample per outcome word of .meta, with its exact count
    outcomes = {dict(k[1])["outcome"]: v for k, v in samples.items()
                if k[0] == "promptfs_requests_total" and dict(k[1])["model"] == "gpt-4o"}
    assert outcomes == {"ok": 2, "http_500": 3, "http_503": 1}
    attempts = sum(len(meta["attempts"]) for meta in metas.values())
    # every attempt in the duration histogram; each got a first byte
    assert value(samples, "promptfs_attempt_duration_seconds_count", GPT) == attempts == 6
    assert value(samples, "promptfs_attempt_duration_seconds_bucket", GPT, le="+Inf") == 6
    assert value(samples, "promptfs_time_to_first_byte_seconds_count", GPT) == 6
    buckets = sorted((Decimal(dict(k[1])["le"]), v) for k, v in samples.items()
                     if k[0] == "promptfs_attempt_duration_seconds_bucket"
                     and dict(k[1])["model"] == "gpt-4o" and dict(k[1])["le"] != "+Inf")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets), "not cumulative"
    total_ms = sum(a["ms"] for meta in metas.values() for a in meta["attempts"])
    assert abs(value(samples, "promptfs_attempt_duration_seconds_sum", GPT)
               - Decimal(total_ms) / 1000) <= Decimal("0.006")
    # two retries of the failed job, one of the flaky one; no failover
    # (a model directory without fallback has one candidate)
    assert value(samples, "promptfs_retries_total", GPT) == 3
    assert value(samples, "promptfs_failovers_total", GPT) == 0
    # tokens and cost as the jobs' .meta say (the failed job reported none)
    done = [metas["ok"], metas["flaky"]]
    assert value(samples, "promptfs_tokens_total", GPT, direction="input") == \
        sum(m["usage"]["input_tokens"] for m in done)
    assert value(samples, "promptfs_tokens_total", GPT, direction="output") == \
        sum(m["usage"]["output_tokens"] for m in done)
    cost = sum(Decimal(repr(m["cost_usd"])).quantize(Decimal("0.000000001")) for m in done)
    assert value(samples, "promptfs_cost_usd_total", GPT) == cost
    assert re.search(r'^promptfs_cost_usd_total\{[^}]*"gpt-4o"\} 0\.\d+$', text, re.M), \
        "money in fixed decimal"
    # the other deployments saw nothing
    for deployment in DEPLOYMENTS[1:]:
        assert value(samples, "promptfs_attempt_duration_seconds_count", deployment) == 0
        assert value(samples, "promptfs_tokens_total", deployment, direction="output") == 0
    assert value(samples, "promptfs_jobs_queued") == 0
    assert value(samples, "promptfs_jobs_in_flight") == 0
    assert value(samples, "promptfs_parked_readers") == 0


@pytest.fixture(scope="module")
def fake_clouds(tmp_path_factory):
    """A fake cloud that also plays Azure and Anthropic, for any/."""
    cloud = FakeCloud(str(tmp_path_factory.mktemp("metrics")),
                      ["--azure-key", AZURE_KEY, "--anthropic-key", ANTHROPIC_KEY])
    yield cloud
    cloud.stop()


def test_a_failover_is_counted_on_the_deployment_left(mount_factory, fake_clouds):
    """In any/, Azure answers 503: three attempts there (two retries),
    then a failover to OpenAI, which answers and is charged."""
    m = mount_factory(config=routing_config(fake_clouds.url),
                      env={"PFS_AZURE_KEY": AZURE_KEY, "PFS_ANTHROPIC_KEY": ANTHROPIC_KEY})
    d = m.path + "/any/eu/chat"
    with open(d + "/f.prompt", "w") as f:
        f.write("[[fault:status code=503 provider=azure]] metrics failover %d" % id(m))
    meta = wait_finished(d, "f", timeout=60)
    assert meta["status"] == "done" and meta["route"] == "oa/eu/gpt"
    assert [(a["target"], a["outcome"]) for a in meta["attempts"]] == \
        [("az/weu/gpt", "http_503")] * 3 + [("oa/eu/gpt", "ok")]
    text = metrics(m)
    samples, _ = parse(text)
    azure, openai = ("az", "weu", "gpt"), ("oa", "eu", "gpt")
    assert value(samples, "promptfs_requests_total", azure, outcome="http_503") == 3
    assert value(samples, "promptfs_requests_total", azure, outcome="ok") == 0
    assert value(samples, "promptfs_retries_total", azure) == 2
    assert value(samples, "promptfs_failovers_total", azure) == 1
    assert value(samples, "promptfs_attempt_duration_seconds_count", azure) == 3
    assert value(samples, "promptfs_requests_total", openai, outcome="ok") == 1
    assert value(samples, "promptfs_retries_total", openai) == 0
    assert value(samples, "promptfs_failovers_total", openai) == 0
    # the answer's tokens and cost on the deployment that gave it
    assert value(samples, "promptfs_tokens_total", openai, direction="output") == \
        meta["usage"]["output_tokens"]
    assert value(samples, "promptfs_tokens_total", azure, direction="output") == 0
    assert value(samples, "promptfs_cost_usd_total", openai) == \
        Decimal(repr(meta["cost_usd"])).quantize(Decimal("0.000000001"))
    # the deployments not tried, listed all the same
    for other in (("an", "eu", "claude"), ("oa", "us", "gpt")):
        assert value(samples, "promptfs_attempt_duration_seconds_count", other) == 0
        assert value(samples, "promptfs_circuit_state", other) == 0
    check_with_promtool(text)


def test_an_open_circuit_is_shown(mnt, fake):
    """Five failed attempts in a row on one deployment open its circuit
    (docs/contract.md): /.metrics shows it open, opened once, while the
    other deployments stay closed; a job sent there meanwhile makes no
    attempt and is counted nowhere."""
    mini = ("openai", "us", "gpt-4o-mini")
    d = mnt.model(*mini)
    os.setxattr(d, "user.policy.retries", b"0")
    for i in range(5):
        with open("%s/f%d.prompt" % (d, i), "w") as f:
            f.write("[[fault:status code=500]] circuit %d %d" % (i, id(mnt)))
        assert wait_finished(d, "f%d" % i)["status"] == "failed"
    with open(d + "/skipped.prompt", "w") as f:
        f.write("circuit skipped %d" % id(mnt))
    meta = wait_finished(d, "skipped")
    assert meta["status"] == "failed" and not meta.get("attempts")
    text = metrics(mnt)
    samples, _ = parse(text)
    assert value(samples, "promptfs_circuit_state", mini) == 1
    assert value(samples, "promptfs_circuit_opens_total", mini) == 1
    assert value(samples, "promptfs_requests_total", mini, outcome="http_500") == 5
    assert value(samples, "promptfs_attempt_duration_seconds_count", mini) == 5
    assert value(samples, "promptfs_retries_total", mini) == 0
    for other in (GPT, ("local", "localhost", "llama3.2")):
        assert value(samples, "promptfs_circuit_state", other) == 0
        assert value(samples, "promptfs_circuit_opens_total", other) == 0
    assert value(samples, "promptfs_jobs_queued") == 0
    assert value(samples, "promptfs_jobs_in_flight") == 0
    check_with_promtool(text)


def test_promtool_accepts_it(mount_factory, fake):
    """promtool's own check of the format and its naming rules, on a
    mount whose names need escaping, after an answer and a failure."""
    config = default_config(fake.url)
    models = config["clouds"]["openai"]["regions"]["us"]["models"]
    models['say "hi" \\ bye'] = {"id": "gpt-4o"}
    mnt = mount_factory(config)
    d = mnt.model("openai", "us", 'say "hi" \\ bye')
    for name, text in (("ok", "promtool ok"), ("bad", "[[fault:status code=400]] promtool")):
        with open(os.path.join(d, name + ".prompt"), "w") as f:
            f.write(text)
        wait_finished(d, name)
    text = metrics(mnt)
    samples, _ = parse(text)
    weird = ("openai", "us", 'say \\"hi\\" \\\\ bye')
    assert value(samples, "promptfs_requests_total", weird, outcome="http_400") == 1
    assert value(samples, "promptfs_requests_total", weird, outcome="ok") == 1
    check_with_promtool(text)


def test_gauges_show_a_job_in_flight_and_a_parked_read(mount_factory, fake):
    mnt = mount_factory(options=("log_level=debug",))
    d = mnt.model()
    gate = "metrics%d" % id(mnt)
    text = "[[fault:gate name=%s]] held" % gate
    with open(d + "/held.prompt", "w") as f:
        f.write(text)
    assert wait_for(lambda: fake.requests_for(text) == 1)
    result = {}
    reader = threading.Thread(target=lambda: result.update(r=read_all(d + "/held.response")))
    reader.start()
    try:
        mnt.wait_log("read parked on held.response")
        samples, _ = parse(metrics(mnt))
        assert value(samples, "promptfs_jobs_in_flight") == 1
        assert value(samples, "promptfs_jobs_queued") == 0
        assert value(samples, "promptfs_parked_readers") == 1
    finally:
        fake.open_gate(gate)
        reader.join(30)
    assert result["r"] == (("echo: " + text).encode(), 0)
    samples, _ = parse(metrics(mnt))
    assert value(samples, "promptfs_jobs_in_flight") == 0
    assert value(samples, "promptfs_parked_readers") == 0


def test_metrics_is_a_read_only_file_of_the_root_only(mnt):
    root = mnt.path
    path = os.path.join(root, ".metrics")
    # listed once, at the root
    assert sorted(os.listdir(root)) == [".metrics", ".usage", "any", "local", "openai"]
    for sub in ("openai", "openai/us", "openai/us/gpt-4o", "any", "any/us", "any/us/gpt-4o"):
        assert ".metrics" not in os.listdir(os.path.join(root, sub))
        assert not os.path.exists(os.path.join(root, sub, ".metrics"))
    st = os.stat(path)
    assert st.st_mode == 0o100444 and st.st_size > 0
    # read-only, and not to be removed, renamed or changed
    for flags in (os.O_WRONLY, os.O_RDWR | os.O_TRUNC, os.O_WRONLY | os.O_CREAT):
        with pytest.raises(OSError) as e:
            os.open(path, flags)
        assert e.value.errno == errno.EACCES
    for call in (lambda: os.unlink(path),
                 lambda: os.rename(path, root + "/openai/us/gpt-4o/m.txt"),
                 lambda: os.chmod(path, 0o666)):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EPERM
    # any uid may read it, as a cron job or node_exporter's collector would
    r = sh("cat %s" % path, user=NOBODY)
    assert r.stdout.startswith(b"# HELP promptfs_requests_total ")
    parse(r.stdout.decode())


def test_counting_while_read(mnt, fake):
    """Jobs run while /.metrics is read over and over: every job is
    counted once, and a reader never holds a submission up."""
    d = mnt.model("local", "localhost", "llama3.2")
    stop = threading.Event()
    reads = []

    def keep_reading():
        while not stop.is_set():
            parse(metrics(mnt))
            reads.append(1)

    readers = [threading.Thread(target=keep_reading) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        sh("cd %s && seq 40 | xargs -P 8 -I{} sh -c 'echo count {} %d > c{}.prompt'"
           % (d, id(mnt)))
        for i in range(1, 41):
            assert wait_finished(d, "c%d" % i)["status"] == "done"
    finally:
        stop.set()
        for t in readers:
            t.join(30)
    assert reads
    samples, _ = parse(metrics(mnt))
    llama = ("local", "localhost", "llama3.2")
    assert value(samples, "promptfs_requests_total", llama, outcome="ok") == 40
    assert value(samples, "promptfs_attempt_duration_seconds_count", llama) == 40
    assert value(samples, "promptfs_jobs_in_flight") == 0
