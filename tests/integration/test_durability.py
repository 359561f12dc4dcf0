"""Nothing lost (SPEC §2, §5.3): files and answers survive unmount and
kill -9; jobs in flight resume and end exactly once."""
import os
import subprocess

from conftest import read_meta, sh


def test_files_and_answers_survive_unmount(mount_factory):
    m = mount_factory()
    d = m.model()
    sh("mkdir %s/ws && echo keep > %s/ws/notes.txt && echo question > %s/ws/q.prompt"
       % (d, d, d))
    answer = sh("cat %s/ws/q.response" % d).stdout
    meta = open(d + "/ws/q.meta").read()
    assert m.unmount() == 0
    m.start()
    assert open(d + "/ws/notes.txt").read() == "keep\n"
    assert open(d + "/ws/q.response", "rb").read() == answer == b"echo: question\n"
    assert open(d + "/ws/q.meta").read() == meta


def test_failed_job_stays_failed_after_remount(mount_factory):
    m = mount_factory()
    d = m.model()
    sh("echo 'no [[fault:status code=400]]' > %s/f.prompt" % d)
    assert sh("cat %s/f.response" % d, check=False).returncode != 0
    m.unmount()
    m.start()
    r = sh("cat %s/f.response" % d, check=False)
    assert r.returncode != 0 and b"Input/output error" in r.stderr
    assert read_meta(d + "/f.meta")["status"] == "failed"


def test_unmount_with_jobs_in_flight_resumes_them(mount_factory, fake):
    m = mount_factory()
    d = m.model()
    sh("for i in 1 2 3; do echo \"slow $i [[fault:latency seconds=2]]\" > %s/s$i.prompt; done" % d)
    assert m.unmount() == 0
    for i in (1, 2, 3):
        assert read_meta(os.path.join(m.state, "tree/openai/us/gpt-4o/s%d.meta" % i))["status"] \
            in ("queued", "running")
    m.start()
    for i in (1, 2, 3):
        assert open(d + "/s%d.response" % i).read() == \
            "echo: slow %d [[fault:latency seconds=2]]\n" % i
        assert read_meta(d + "/s%d.meta" % i)["status"] == "done"


def test_kill9_with_100_jobs_in_flight(mount_factory, fake):
    m = mount_factory()
    d = m.model("local", "localhost", "llama3.2") + "/k9"
    os.mkdir(d)
    sh("seq 1 100 | xargs -P 16 -I{} sh -c "
       "'echo \"job {} [[fault:latency seconds=1]]\" > %s/p{}.prompt'" % d)
    m.kill9()
    tree = os.path.join(m.state, "tree/local/localhost/llama3.2/k9")
    unfinished = [f for f in os.listdir(tree) if f.endswith(".meta") and
                  read_meta(os.path.join(tree, f))["status"] in ("queued", "running")]
    assert len(unfinished) > 50  # most were in flight when the daemon died
    m.start()
    out = m.workdir + "/out"
    os.mkdir(out)
    sh("seq 1 100 | xargs -P 100 -I{} sh -c 'cat %s/p{}.response > %s/{}'" % (d, out),
       timeout=120)
    for i in range(1, 101):
        assert open("%s/%d" % (out, i)).read() == "echo: job %d [[fault:latency seconds=1]]\n" % i
    for i in range(1, 101):
        meta = read_meta(d + "/p%d.meta" % i)
        assert meta["status"] == "done"
        # exactly one successful attempt in the record: none ran twice to completion
        assert [a["outcome"] for a in meta["attempts"]].count("ok") == 1


def test_prompt_changed_while_stopped_is_not_resumed_with_other_text(mount_factory):
    m = mount_factory()
    d = m.model()
    sh("echo 'original [[fault:latency seconds=5]]' > %s/c.prompt" % d)
    m.kill9()
    # as if a writer had been rewriting the prompt when the daemon died
    with open(os.path.join(m.state, "tree/openai/us/gpt-4o/c.prompt"), "w") as f:
        f.write("half-written")
    m.start()
    r = sh("cat %s/c.response" % d, check=False)
    assert r.returncode != 0
    assert "prompt changed" in open(d + "/c.error").readline()


def test_sigterm_with_blocked_readers_unmounts_and_resumes(mount_factory):
    m = mount_factory(options=("log_level=debug",))
    d = m.model()
    sh("echo 'long wait [[fault:latency seconds=30 times=1]]' > %s/w.prompt" % d)
    cat = subprocess.Popen(["cat", d + "/w.response"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    m.wait_log("read parked on w.response")
    m.proc.terminate()
    out, err = cat.communicate(timeout=20)
    assert cat.returncode != 0 and out == b""  # never a clean end of file
    assert m.proc.wait(20) == 0
    m.proc = None
    assert read_meta(os.path.join(m.state, "tree/openai/us/gpt-4o/w.meta"))["status"] == "queued"
    m.start()
    assert open(d + "/w.response").read() == "echo: long wait [[fault:latency seconds=30 times=1]]\n"
