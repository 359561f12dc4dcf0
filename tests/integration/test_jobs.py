"""Jobs through the mount: submit on close and on rename, stream, meta,
error files, cancellation (SPEC §5)."""
import errno
import json
import os
import select
import signal
import subprocess
import time

import pytest

from conftest import PYTHON, read_all, read_meta, sh, wait_for


def test_echo_then_cat_gives_exact_answer(mnt):
    d = mnt.model()
    sh("echo 'What is 2+2?' > %s/q.prompt" % d)
    r = sh("cat %s/q.response" % d)
    assert r.stdout == b"echo: What is 2+2?\n"
    meta = read_meta(d + "/q.meta")
    assert meta["status"] == "done"
    assert meta["route"] == "openai/us/gpt-4o"
    assert meta["usage"] == {"input_tokens": 4, "output_tokens": 5}
    assert meta["finish_reason"] == "stop"
    assert meta["attempts"][0]["target"] == "openai/us/gpt-4o"
    assert meta["attempts"][0]["outcome"] == "ok"
    assert meta["uid"] == 0
    for key in ("submitted", "started", "finished", "request_id"):
        assert key in meta
    assert not os.path.exists(d + "/q.error")


def test_response_appears_at_submission_and_stat_reports_final_size(mnt):
    d = mnt.model()
    sh("echo 'hello [[fault:latency seconds=1]]' > %s/slow.prompt" % d)
    assert os.path.exists(d + "/slow.response")
    assert read_meta(d + "/slow.meta")["status"] in ("queued", "running")
    data = open(d + "/slow.response", "rb").read()
    assert data == b"echo: hello [[fault:latency seconds=1]]\n"
    assert os.stat(d + "/slow.response").st_size == len(data)


def test_utf8_answer_is_byte_exact(mnt):
    d = mnt.model()
    text = "Grüße, 世界! 🎉 ça va?\n"
    with open(d + "/u.prompt", "w", encoding="utf-8") as f:
        f.write(text)
    assert open(d + "/u.response", "rb").read() == ("echo: " + text).encode()


def test_json_prompt_with_system_and_max_tokens(mnt):
    d = mnt.model()
    req = {"messages": [{"role": "system", "content": "be brief"},
                        {"role": "user", "content": "tell me a long story about files"}],
           "temperature": 0.2, "max_tokens": 3}
    with open(d + "/j.prompt", "w") as f:
        json.dump(req, f)
    answer = open(d + "/j.response", "rb").read()
    full = b"[system: be brief] echo: tell me a long story about files"
    assert answer == full[:12]
    assert read_meta(d + "/j.meta")["finish_reason"] == "length"


def test_invalid_utf8_is_eilseq_at_the_write_that_shows_it(mnt, fake):
    d = mnt.model()
    fd = os.open(d + "/bad.prompt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"caf\xc3")  # cut at the end: the next write may finish it
    with pytest.raises(OSError) as e:
        os.write(fd, b"(\n")
    assert e.value.errno == errno.EILSEQ
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EILSEQ
    assert not os.path.exists(d + "/bad.response")
    assert not os.path.exists(d + "/bad.meta")
    err = open(d + "/bad.error").read()
    assert err.startswith("The prompt was refused: ")
    assert "UTF-8" in err
    # what a shell sees: echo reports the failed write
    r = sh("printf 'bad \\377 byte' > %s/sh.prompt" % d, check=False)
    assert r.returncode == 1 and b"Invalid or incomplete multibyte" in r.stderr
    # a character split across writes is fine; one cut at the very end
    # is refused at close()
    fd = os.open(d + "/split.prompt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"caf\xc3")
    os.write(fd, b"\xa9 ok")
    os.close(fd)
    assert sh("cat %s/split.response" % d).stdout == "echo: café ok".encode()
    fd = os.open(d + "/cut.prompt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"caf\xc3")
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EILSEQ
    assert fake.requests_for("caf") == 0


def test_malformed_json_prompt_names_the_key(mnt):
    d = mnt.model()
    fd = os.open(d + "/k.prompt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b'{"messages":[{"role":"user","content":"hi"}],"temprature":1}')
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EINVAL
    assert "temprature" in open(d + "/k.error").read()
    # text that only starts like JSON is text (SPEC 5.2)
    fd = os.open(d + "/k2.prompt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b'{"messages": [')
    os.close(fd)
    assert read_all(d + "/k2.response") == (b'echo: {"messages": [', 0)
    assert read_meta(d + "/k2.meta")["format"] == "text"


def test_prompt_over_one_mib_is_efbig_at_write(mnt):
    d = mnt.model()
    fd = os.open(d + "/big.prompt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"a" * (1024 * 1024))
    with pytest.raises(OSError) as e:
        os.write(fd, b"b")
    assert e.value.errno == errno.EFBIG
    # a prompt a write failed to store whole is never sent (SPEC 5.1),
    # and close() says so too
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EFBIG
    assert not os.path.exists(d + "/big.response")
    assert "not submitted" in open(d + "/big.error").read()
    r = sh("head -c 1048577 /dev/zero | tr '\\0' a > %s/big2.prompt" % d, check=False)
    assert r.returncode != 0
    assert b"File too large" in r.stderr
    assert not os.path.exists(d + "/big2.response")
    assert "larger than the limit" in open(d + "/big2.error").read()
    # exactly the limit, every write stored: submitted
    with open(d + "/big3.prompt", "wb") as f:
        f.write(b"a" * (1024 * 1024))
    assert open(d + "/big3.response", "rb").read(6) == b"echo: "


def test_touch_and_empty_prompt_submit_nothing(mnt, fake):
    d = mnt.model()
    sh("touch %s/t.prompt" % d)
    sh(": > %s/t2.prompt" % d)
    assert sorted(os.listdir(d)) == [".usage", "t.prompt", "t2.prompt"]


def test_rewriting_a_prompt_replaces_the_previous_job(mnt):
    d = mnt.model()
    sh("echo first > %s/r.prompt" % d)
    assert sh("cat %s/r.response" % d).stdout == b"echo: first\n"
    sh("echo second >> %s/r.prompt" % d)
    assert sh("cat %s/r.response" % d).stdout == b"echo: first\nsecond\n"
    sh("echo third > %s/r.prompt" % d)
    assert sh("cat %s/r.response" % d).stdout == b"echo: third\n"


def test_rename_submits_the_batch_pattern(mnt):
    d = mnt.model()
    sh("echo 'from tmp' > %s/x.tmp && mv %s/x.tmp %s/x.prompt" % (d, d, d))
    assert sh("cat %s/x.response" % d).stdout == b"echo: from tmp\n"
    assert not os.path.exists(d + "/x.tmp")


def test_rename_of_invalid_prompt_fails_and_keeps_the_source(mnt):
    d = mnt.model()
    with open(d + "/y.tmp", "wb") as f:
        f.write(b"\xff\xfe")
    with pytest.raises(OSError) as e:
        os.rename(d + "/y.tmp", d + "/y.prompt")
    assert e.value.errno == errno.EILSEQ
    assert os.path.exists(d + "/y.tmp")
    assert not os.path.exists(d + "/y.prompt")
    assert "UTF-8" in open(d + "/y.error").read()


def test_generated_files_are_read_only(mnt):
    d = mnt.model()
    sh("echo hi > %s/g.prompt && cat %s/g.response" % (d, d))
    for name in ("g.response", "g.meta"):
        with pytest.raises(OSError) as e:
            os.open(d + "/" + name, os.O_WRONLY)
        assert e.value.errno == errno.EACCES
        assert os.stat(d + "/" + name).st_mode & 0o222 == 0
    with pytest.raises(OSError) as e:
        os.open(d + "/new.response", os.O_WRONLY | os.O_CREAT, 0o644)
    assert e.value.errno == errno.EACCES


def test_rm_prompt_cancels_and_removes_generated_files(mnt, fake):
    d = mnt.model()
    sh("echo 'wait [[fault:latency seconds=30]]' > %s/c.prompt" % d)
    fd = os.open(d + "/c.response", os.O_RDONLY)
    os.unlink(d + "/c.prompt")
    with pytest.raises(OSError) as e:
        os.read(fd, 100)
    assert e.value.errno == errno.EIO
    os.close(fd)
    assert [n for n in os.listdir(d) if n.startswith("c.")] == []


def test_nonblocking_read_gives_eagain_then_poll_wakes(mnt):
    d = mnt.model()
    sh("echo 'later [[fault:latency seconds=1]]' > %s/nb.prompt" % d)
    fd = os.open(d + "/nb.response", os.O_RDONLY | os.O_NONBLOCK)
    with pytest.raises(OSError) as e:
        os.read(fd, 100)
    assert e.value.errno == errno.EAGAIN
    p = select.poll()
    p.register(fd, select.POLLIN)
    t0 = time.time()
    events = p.poll(10000)
    assert events and events[0][1] & select.POLLIN
    assert time.time() - t0 < 9
    data = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            p.poll(10000)
            continue
        if not chunk:
            break
        data += chunk
    os.close(fd)
    assert data == b"echo: later [[fault:latency seconds=1]]\n"


# Reads a .response with one raw read(2) and prints its result and errno.
# Python installs its signal handlers without SA_RESTART, so a signal
# makes the interrupted read(2) return -1 with the errno the daemon gave.
EINTR_READER = r"""
import ctypes, errno, os, signal, sys
signal.signal(signal.SIGINT, lambda sig, frame: None)
libc = ctypes.CDLL(None, use_errno=True)
libc.read.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
libc.read.restype = ctypes.c_ssize_t
fd = os.open(sys.argv[1], os.O_RDONLY)
buf = ctypes.create_string_buffer(4096)
n = libc.read(fd, buf, 4096)
print(n, errno.errorcode.get(ctypes.get_errno(), "-") if n < 0 else buf.raw[:n].decode())
"""


def test_blocked_read_is_interrupted_with_eintr(mount_factory, fake):
    m = mount_factory(options=("log_level=debug",))
    d = m.model()
    sh("echo 'held [[fault:gate name=jobs-eintr]]' > %s/i.prompt" % d)
    reader = subprocess.Popen([PYTHON, "-c", EINTR_READER, d + "/i.response"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    m.wait_log("read parked on i.response")
    reader.send_signal(signal.SIGINT)
    out, err = reader.communicate(timeout=10)
    assert (out, err) == (b"-1 EINTR\n", b"")

    # Ctrl-C on a real cat: it dies of the signal at once
    cat = subprocess.Popen(["cat", d + "/i.response"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    m.wait_log("read parked on i.response", count=2)
    cat.send_signal(signal.SIGINT)
    assert cat.wait(10) == -signal.SIGINT

    # the interrupted reads left the job alone: it still answers in full
    fake.open_gate("jobs-eintr")
    assert sh("cat %s/i.response" % d).stdout == b"echo: held [[fault:gate name=jobs-eintr]]\n"


def test_stream_is_readable_while_it_arrives(mnt):
    d = mnt.model()
    sh("echo 'abcdefghijklmnopqrstuvwxyz [[fault:stall after=10 seconds=1]]' > %s/s.prompt" % d)
    fd = os.open(d + "/s.response", os.O_RDONLY)
    t0 = time.time()
    first = os.read(fd, 4096)
    assert first and len(first) <= 10 + 7
    assert time.time() - t0 < 0.9
    rest = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        rest += chunk
    os.close(fd)
    assert first + rest == b"echo: abcdefghijklmnopqrstuvwxyz [[fault:stall after=10 seconds=1]]\n"


def test_many_readers_of_one_response(mnt):
    d = mnt.model()
    sh("echo 'shared [[fault:latency seconds=1]]' > %s/m.prompt" % d)
    r = sh("for i in $(seq 1 50); do cat %s/m.response > /dev/shm/pfs-m-$i & done; wait; "
           "cat /dev/shm/pfs-m-* | sort | uniq -c; rm -f /dev/shm/pfs-m-*" % d)
    assert r.stdout.strip() == b"50 echo: shared [[fault:latency seconds=1]]"


def test_workspaces_hold_jobs_at_any_depth(mnt):
    d = mnt.model()
    sh("mkdir -p %s/batch-42/a/b && echo deep > %s/batch-42/a/b/q.prompt" % (d, d))
    assert sh("cat %s/batch-42/a/b/q.response" % d).stdout == b"echo: deep\n"
    sh("mv %s/batch-42 %s/batch-43" % (d, d))
    assert sh("cat %s/batch-43/a/b/q.response" % d).stdout == b"echo: deep\n"


def test_parallel_batch_with_xargs(mnt):
    d = mnt.model("local", "localhost", "llama3.2") + "/batch"
    os.mkdir(d)
    sh("seq 1 100 | xargs -P 32 -I{} sh -c 'echo \"item {}\" > %s/p{}.prompt'" % d)
    out = mnt.workdir + "/out"
    os.mkdir(out)
    sh("seq 1 100 | xargs -P 32 -I{} sh -c 'cat %s/p{}.response > %s/{}'" % (d, out))
    for i in range(1, 101):
        assert open("%s/%d" % (out, i)).read() == "echo: item %d\n" % i


def test_dd_writes_a_prompt_in_small_blocks(mnt):
    d = mnt.model()
    sh("printf 'written by dd in pieces' | dd of=%s/dd.prompt bs=3 status=none" % d)
    assert sh("cat %s/dd.response" % d).stdout == b"echo: written by dd in pieces"


def test_a_reader_racing_the_submission_never_sees_an_empty_clean_end(mnt):
    """A .response opened the moment it appears belongs to a live job: the
    reader waits for the answer instead of reading an empty file."""
    import threading
    d = mnt.model("local", "localhost", "llama3.2") + "/race"
    os.mkdir(d)
    bad = []

    def reader(i):
        path = "%s/r%d.response" % (d, i)
        deadline = time.time() + 20
        while not os.path.exists(path):
            assert time.time() < deadline
        data = open(path, "rb").read()
        if data != b"echo: q %d [[fault:latency seconds=0.3]]\n" % i:
            bad.append((i, data))

    def writer(i):
        with open("%s/r%d.prompt" % (d, i), "w") as f:
            f.write("q %d [[fault:latency seconds=0.3]]\n" % i)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(100)]
    threads += [threading.Thread(target=writer, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


def test_a_thousand_blocked_readers_hold_no_threads(mount_factory, fake):
    m = mount_factory(options=("log_level=debug",))
    d = m.model()
    sh("echo 'crowd [[fault:gate name=jobs-crowd]]' > %s/crowd.prompt" % d)
    out = m.workdir + "/crowd"
    os.mkdir(out)
    readers = subprocess.Popen(
        ["bash", "-c", "for i in $(seq 1 1000); do cat %s/crowd.response > %s/$i & done; wait"
         % (d, out)])
    # the answer is held until every reader is parked in the daemon
    m.wait_log("read parked on crowd.response", count=1000, timeout=120)
    threads = len(os.listdir("/proc/%d/task" % m.proc.pid))
    fake.open_gate("jobs-crowd")
    assert readers.wait(60) == 0
    assert threads < 80, "%d daemon threads with 1000 readers blocked" % threads
    want = b"echo: crowd [[fault:gate name=jobs-crowd]]\n"
    assert all(open("%s/%d" % (out, i), "rb").read() == want for i in range(1, 1001))


def test_stat_reports_the_bytes_so_far(mnt):
    d = mnt.model()
    text = "growing answer [[fault:stall after=10 seconds=2.5]]"
    with open(d + "/g.prompt", "w") as f:
        f.write(text)
    fd = os.open(d + "/g.response", os.O_RDONLY)
    try:
        first = os.read(fd, 4096)
        assert 0 < len(first) <= 10
        # the backend sends 10 bytes, then pauses 2.5 s: stat shows them
        sizes = []
        assert wait_for(lambda: sizes.append(os.stat(d + "/g.response").st_size) or
                        sizes[-1] == 10, 10), "sizes seen: %r" % sizes
        while os.read(fd, 4096):
            pass
    finally:
        os.close(fd)
    assert os.stat(d + "/g.response").st_size == len("echo: " + text)
