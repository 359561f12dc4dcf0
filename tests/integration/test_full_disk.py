"""A full state_dir (SPEC §5.1, §5.3): an answer that cannot be stored is a
failed job (EIO, never a clean end of file, never run again), a submission
that cannot be recorded fails at close() with ENOSPC and leaves nothing that
looks finished, and the daemon serves again once space is freed.

The state_dir lives on a 2 MiB tmpfs mounted by the test (it runs as root),
filled with a filler file beside the state_dir."""
import errno
import os
import subprocess
import tempfile
import time
import uuid

import pytest

from conftest import long_answer, prompt_digest, read_all, read_meta, wait_for

TMPFS_SIZE = "2m"
LONG = 100 * 1024  # an answer several times larger than the room left


@pytest.fixture
def small_disk(mount_factory):
    """(tmpfs directory, make): MAKE(**kw) mounts promptfs with its state_dir
    on a fresh 2 MiB tmpfs. Cleanup unmounts every promptfs first (the
    daemon holds files open in the tmpfs), then the tmpfs, whatever the test
    left behind; the daemons' exit status is checked after both."""
    top = tempfile.mkdtemp(prefix="promptfs-disk-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % TMPFS_SIZE, "tmpfs",
                    top], check=True)
    mounts = []

    def make(**kw):
        m = mount_factory(state_dir=os.path.join(top, "state"), **kw)
        mounts.append(m)
        return m

    codes = []
    try:
        yield top, make
    finally:
        for m in mounts:
            codes.append((m, m.unmount()))
        for _ in range(50):
            if subprocess.run(["umount", top], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", top], capture_output=True)
        os.rmdir(top)
    for m, code in codes:
        assert code in (0, None), "promptfs exited %d:\n%s" % (code, open(m.log).read()[-4000:])


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(top, leave=0):
    """Writes TOP/filler until at most LEAVE bytes of the tmpfs are free
    (LEAVE=0: until the tmpfs refuses a byte more); returns its path."""
    path = os.path.join(top, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = b"\0" * 65536
    try:
        while True:
            want = min(len(block), free_bytes(top) - leave)
            if want <= 0:
                break
            try:
                os.write(fd, block[:want])
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
    finally:
        os.close(fd)
    return path


def submit(path, text):
    """Writes TEXT to PATH with plain system calls, as a program that checks
    every result would; returns (the step that failed, its errno) or
    (None, 0) when open, write and close all succeeded."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    failed = (None, 0)
    try:
        os.write(fd, text.encode())
    except OSError as e:
        failed = ("write", e.errno)
    try:
        os.close(fd)
    except OSError as e:
        if failed[0] is None:
            failed = ("close", e.errno)
    return failed


def no_finished_answer(path):
    """True when PATH (a .response) is absent or reading it fails: nothing
    there reads as a finished answer."""
    if not os.path.exists(path):
        return True
    return read_all(path)[1] != 0


def answered(d, name, text):
    """Submits TEXT as D/NAME.prompt and reads its answer to the end. Also a
    barrier: jobs start in the order they are submitted and none waits for
    a slot here, so once this one is answered, a job submitted before it
    would have sent its request too."""
    assert submit(os.path.join(d, name + ".prompt"), text) == (None, 0)
    return read_all(os.path.join(d, name + ".response"))


def unique(word):
    return "%s %s" % (word, uuid.uuid4().hex[:12])


def read_outcome(path):
    """How reading PATH to the end went, in words, for failure messages."""
    data, e = read_all(path)
    return "%s after %d bytes" % (errno.errorcode.get(e, "a clean end of file"), len(data))


def error_line(path):
    return open(path).readline() if os.path.exists(path) else None


def test_answer_that_cannot_be_stored_fails_with_eio_and_is_not_rerun(small_disk, fake):
    top, make = small_disk
    m = make(options=("log_level=debug",))
    d = m.model("local", "localhost", "llama3.2")
    gate = uuid.uuid4().hex
    text = "%s [[fault:gate name=%s]] [[fault:long bytes=%d]]" % (unique("big"), gate, LONG)
    base = os.path.join(d, "big")
    filler = fill(top, leave=20 * 1024)
    assert submit(base + ".prompt", text) == (None, 0)  # the prompt and its record fit
    # each step's result is noted and the test goes on, so that one run
    # shows every way the daemon breaks the rule; they are asserted at the end
    problems = []

    # one reader waits before the first byte, one comes after the end
    cat = subprocess.Popen(["cat", base + ".response"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    m.wait_log("read parked on big.response")
    fake.open_gate(gate)
    out, err = cat.communicate(timeout=60)
    if cat.returncode == 0 or b"Input/output error" not in err or len(out) >= LONG:
        problems.append("the waiting reader ended with status %d after %d bytes: %r"
                        % (cat.returncode, len(out), err))
    later = read_outcome(base + ".response")
    if not later.startswith("EIO"):
        problems.append("a later reader got %s" % later)

    # with room again, the end of the job is on record: failed, and why
    os.unlink(filler)
    # (.meta read through the mount says so at once, from memory; the
    # files follow at the daemon's next try, within a second or so)
    if not wait_for(lambda: read_meta(base + ".meta")["status"] == "failed" and
                    os.path.exists(base + ".error"), 5):
        problems.append("5 s after space was freed .meta says %s"
                        % read_meta(base + ".meta")["status"])
    why = error_line(base + ".error")
    if why is None or "no space" not in why.lower():
        problems.append(".error's first line does not say no space is left: %r" % why)
    sent = fake.requests_for(text)
    assert sent >= 1

    # and it stays so: not run again at the next mount
    assert m.unmount() == 0
    m.start()
    after = read_outcome(base + ".response")  # waits for a resumed job to end
    if not after.startswith("EIO"):
        problems.append("after a remount .response reads %s" % after)
    status = read_meta(base + ".meta")["status"]
    if status != "failed":
        problems.append("after a remount .meta says %s" % status)
    if fake.requests_for(text) != sent:
        problems.append("the failed job ran again after the remount (%d requests, then %d)"
                        % (sent, fake.requests_for(text)))
    assert not problems, "\n".join(problems)


def test_submission_on_a_full_disk_fails_with_enospc(small_disk, fake):
    top, make = small_disk
    m = make()
    d = m.model("local", "localhost", "llama3.2")
    base = os.path.join(d, "fresh")
    text = unique("nowhere to put it")
    filler = fill(top)
    step, e = submit(base + ".prompt", text)
    assert e == errno.ENOSPC, "on a full state_dir the submission's %s gave %s" % (
        step or "open, write and close", errno.errorcode.get(e, "no error"))
    assert no_finished_answer(base + ".response"), "an empty answer reads as finished"
    assert not os.path.exists(base + ".meta") or \
        read_meta(base + ".meta")["status"] not in ("queued", "running", "done")
    os.unlink(filler)
    later = unique("later")
    assert answered(d, "later", later) == (("echo: " + later).encode(), 0)
    assert fake.requests_for(text) == 0  # nothing sent for a job that was refused


def test_resubmission_on_a_full_disk_keeps_the_previous_job_whole(small_disk, fake):
    top, make = small_disk
    m = make()
    d = m.model("local", "localhost", "llama3.2")
    base = os.path.join(d, "again")
    first = unique("first")
    assert submit(base + ".prompt", first) == (None, 0)
    assert read_all(base + ".response") == (("echo: " + first).encode(), 0)
    assert read_meta(base + ".meta")["status"] == "done"

    # the same length: the new prompt fits in the old prompt's place, so
    # only the new job's record finds no room, at close()
    second = unique("other")
    assert len(second) == len(first)
    filler = fill(top)
    step, e = submit(base + ".prompt", second)
    outcome = "%s gave %s" % (step, errno.errorcode.get(e, e)) if step else \
        "open, write and close all succeeded"

    # whatever happened, the files agree: the first job whole, or no job,
    # never a done .meta beside a new empty (or other) answer
    def consistent():
        if not os.path.exists(base + ".meta"):
            return no_finished_answer(base + ".response")
        meta = read_meta(base + ".meta")
        if meta["status"] in ("queued", "running"):
            return None  # the second job was accepted and has not ended yet
        data, err = read_all(base + ".response")
        if meta["status"] != "done":
            return err != 0
        # done: the whole answer to the prompt that .meta names
        want = [("echo: " + t).encode() for t in (first, second)
                if meta.get("prompt_sha256") in (None, prompt_digest(t))]
        return err == 0 and data in want

    wait_for(lambda: consistent() is not None, 10)  # a job the answer runs into the full disk
    state = consistent()
    meta = read_meta(base + ".meta") if os.path.exists(base + ".meta") else None
    response = read_all(base + ".response") if os.path.exists(base + ".response") else None
    os.unlink(filler)
    assert e == errno.ENOSPC, "on a full state_dir the resubmission's %s; then .meta says %s " \
        "and .response reads %r" % (outcome, meta and meta["status"], response)
    assert state is not None, "10 s later .meta still says %s" % meta["status"]
    assert state, ".meta %r beside .response %r" % (meta, response)
    assert fake.requests_for(second) == 0  # a refused submission sends nothing


def test_directory_in_the_way_of_meta_fails_the_submission(mount_factory, fake):
    m = mount_factory()
    d = m.model("local", "localhost", "llama3.2")
    base = os.path.join(d, "x")
    # a directory where the job's record must go: made in state_dir (the
    # mount refuses a generated name to directories), as a state_dir from
    # before that rule may hold one
    with pytest.raises(PermissionError):
        os.mkdir(base + ".meta")
    os.mkdir(os.path.join(m.state, "tree", "local", "localhost", "llama3.2", "x.meta"))
    text = unique("blocked")
    step, e = submit(base + ".prompt", text)
    assert (step, e) == ("close", errno.EISDIR), "the submission's %s gave %s" % (
        step or "open, write and close", errno.errorcode.get(e, "no error"))
    assert os.path.isdir(base + ".meta")
    later = unique("later")
    assert answered(d, "later", later) == (("echo: " + later).encode(), 0)
    assert fake.requests_for(text) == 0  # nothing sent for a job that was refused
    assert no_finished_answer(base + ".response"), "an empty x.response reads as finished"


def test_daemon_serves_again_once_space_is_freed(small_disk, fake):
    top, make = small_disk
    m = make()
    d = m.model("local", "localhost", "llama3.2")
    # an answer that runs into the full disk, then submissions that find none
    filler = fill(top, leave=20 * 1024)
    big = "%s [[fault:long bytes=%d]]" % (unique("big"), LONG)
    assert submit(os.path.join(d, "big.prompt"), big) == (None, 0)
    assert read_all(os.path.join(d, "big.response"))[1] == errno.EIO
    fill(top)
    for i in range(3):
        submit(os.path.join(d, "full%d.prompt" % i), unique("full"))
    os.unlink(filler)

    assert m.proc.poll() is None, "the daemon died on a full disk"
    text = unique("after")
    assert submit(os.path.join(d, "after.prompt"), text) == (None, 0)
    assert read_all(os.path.join(d, "after.response")) == (("echo: " + text).encode(), 0)
    assert read_meta(os.path.join(d, "after.meta"))["status"] == "done"
    # and the big answer fits now, from a new job
    assert submit(os.path.join(d, "big2.prompt"), big) == (None, 0)
    assert read_all(os.path.join(d, "big2.response")) == (long_answer(big, LONG).encode(), 0)
