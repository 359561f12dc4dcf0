"""Short-lived OAuth tokens through the mount (issue 9 item 7): a Vertex
service-account token granted for less than the engine's five-minute
early-refresh margin used to be due for renewal the moment it arrived, so
the engine fetched tokens in a loop (about 30 a second) and no job ever
ran. Any lifetime the token endpoint grants must be usable: renewed after
the later of (lifetime - 300 s) and 3/4 of the lifetime, never sooner than
1 s after the previous token arrived."""
import datetime
import math
import os
import subprocess
import time

import pytest

from conftest import FAKECLOUD, PYTHON, FakeCloud, read_all, sh, wait_finished, wait_for

WINDOW_S = 5.0


def refresh_after(lifetime):
    """backends/google_auth.c's google_token_refresh_after."""
    return max(lifetime - 300, lifetime * 0.75, 1.0)


def token_request_times(cloud):
    """Wall-clock times of the POST /token requests the fake answered 200."""
    times = []
    for line in open(cloud.log):
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "/token" and fields[3] == "200":
            stamp = datetime.datetime.strptime(fields[0], "%Y-%m-%dT%H:%M:%S.%fZ")
            times.append(stamp.replace(tzinfo=datetime.timezone.utc).timestamp())
    return times


@pytest.fixture
def short_token_cloud(request, tmp_path):
    """A fake cloud whose token endpoint grants tokens of request.param
    seconds (--vertex-token-ttl), with a service-account key for it."""
    work = str(tmp_path)
    subprocess.run([PYTHON, FAKECLOUD, "--make-sa-key", work], check=True, capture_output=True)
    cloud = FakeCloud(work, ["--vertex-sa-json", os.path.join(work, "sa.json"),
                             "--update-sa-token-uri", "--vertex-token-ttl", str(request.param)])
    cloud.sa_path = os.path.join(work, "sa.json")
    cloud.lifetime = request.param
    assert wait_for(lambda: str(cloud.port) in open(cloud.sa_path).read(), 5)
    yield cloud
    cloud.stop()


def vertex_config(cloud):
    return {"clouds": {"gcp": {"provider": "vertex", "project": "p",
                               "auth": {"service_account_file": cloud.sa_path},
                               "regions": {"global": {"geo": "global", "endpoint": cloud.url,
                                                      "models": {"gemini-2.5-pro": {}}}}}}}


def run_job(d, name, text):
    with open(os.path.join(d, name + ".prompt"), "w") as f:
        f.write(text)
    # bounded: before the fix the job waited for a usable token forever
    meta = wait_finished(d, name, timeout=20)
    assert meta["status"] == "done", meta
    assert read_all(os.path.join(d, name + ".response")) == (("echo: " + text).encode(), 0)


@pytest.mark.parametrize("short_token_cloud", [2, 6], indirect=True,
                         ids=["lifetime-2s", "lifetime-6s"])
def test_short_lived_tokens_are_used_and_renewed_at_a_bounded_rate(short_token_cloud,
                                                                   mount_factory):
    cloud = short_token_cloud
    lifetime = cloud.lifetime
    m = mount_factory(config=vertex_config(cloud))
    d = m.model("gcp", "global", "gemini-2.5-pro")
    assert cloud.stats()["tokens_issued"] == 0

    # jobs one after another for WINDOW_S seconds: each needs a token
    # that is valid when the fake receives it
    start = time.time()
    jobs = 0
    while time.time() - start < WINDOW_S:
        run_job(d, "s%d" % jobs, "short token %d" % jobs)
        jobs += 1
        time.sleep(0.05)  # pacing only: a job every ~50 ms while tokens age
    issued = cloud.stats()["tokens_issued"]
    times = token_request_times(cloud)
    gaps = [round(b - a, 2) for a, b in zip(times, times[1:])]
    # A token is renewed no sooner than refresh_after(lifetime) after the
    # previous one: over 5 s that is at most 1 + floor(5 / 4.5) = 2 tokens
    # for a 6 s lifetime, 1 + floor(5 / 1.5) = 4 for a 2 s lifetime
    # (before the fix: about 30 a second).
    bound = 1 + math.floor(WINDOW_S / refresh_after(lifetime))
    assert bound == {2: 4, 6: 2}[lifetime]
    detail = "%d tokens for %d jobs over %.1f s, gaps %s" % (issued, jobs, WINDOW_S, gaps)
    assert issued <= bound, detail
    # and renewed at all: 2 s tokens cannot have served 5 s of jobs alone
    assert issued >= {2: 3, 6: 1}[lifetime], detail
    assert all(gap >= refresh_after(lifetime) - 0.1 for gap in gaps), detail
    print("\nlifetime %d s: %s" % (lifetime, detail))

    # many jobs at once on an aging short token: every one succeeds, and
    # the burst adds at most one renewal per refresh interval
    before = cloud.stats()["tokens_issued"]
    t0 = time.time()
    sh("for i in $(seq 1 20); do echo \"burst $i\" > %s/b$i.prompt & done; wait" % d)
    for i in range(1, 21):
        meta = wait_finished(d, "b%d" % i, timeout=20)
        assert meta["status"] == "done", meta
        assert read_all(d + "/b%d.response" % i) == (b"echo: burst %d\n" % i, 0)
    elapsed = time.time() - t0
    assert cloud.stats()["tokens_issued"] - before <= 1 + elapsed / refresh_after(lifetime)
