"""The descriptors the daemon holds are bounded whatever the tree's size
: one user making tens of thousands of directories cannot
exhaust them for everyone, and a daemon whose descriptors did run out
answers EMFILE, never crashes, and unmounts cleanly."""
import errno
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time

from conftest import NOBODY, sh

N_DIRS = 25000

# Run as NOBODY: makes N directories in BIG, keeps the kernel holding
# them (an O_PATH descriptor on as many as its limit allows, a stat of
# each, which reaches the daemon since workspace attributes are not
# cached), writes a file in every 50th, then stats them all again.
MAKER = r"""
import os, resource, sys
big, n = sys.argv[1], int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
room = hard - 64
held = []
for i in range(n):
    p = "%s/d%d" % (big, i)
    os.mkdir(p)
    os.stat(p)
    if len(held) < room:
        held.append(os.open(p, os.O_PATH | os.O_DIRECTORY))
    if i % 50 == 0:
        with open(p + "/f.txt", "w") as f:
            f.write("x%d\n" % i)
for i in range(n):
    os.stat("%s/d%d" % (big, i))
for i in range(0, n, 50):
    with open("%s/d%d/f.txt" % (big, i)) as f:
        assert f.read() == "x%d\n" % i
print(len(held))
"""


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class FdSampler(threading.Thread):
    """The most descriptors PID held, sampled every 20 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            self.peak = max(self.peak, open_fds(self.pid))
            time.sleep(0.02)

    def stop(self):
        self.done.set()
        self.join()
        return self.peak


def test_one_user_cannot_exhaust_the_daemons_descriptors(mnt):
    d = mnt.model()
    big = d + "/big"
    pid = mnt.proc.pid
    sh("mkdir %s" % big, user=NOBODY)
    idle = open_fds(pid)
    sampler = FdSampler(pid)
    sampler.start()
    r = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                        "--clear-groups", sys.executable, "-c", MAKER, big, str(N_DIRS)],
                       capture_output=True, timeout=120)
    peak = sampler.stop()
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    held = int(r.stdout)
    print("idle %d, peak %d descriptors; the user held %d directories open" %
          (idle, peak, held))
    assert held > 10000
    assert peak < idle + 2000, "the daemon held %d descriptors (idle %d)" % (peak, idle)

    # everyone else is still served
    sh("echo 'Still there?' > %s/q.prompt" % d)
    assert sh("cat %s/q.response" % d).stdout == b"echo: Still there?\n"
    sh("mkdir %s/mine && echo ok > %s/mine/t && cat %s/mine/t" % (d, d, d), user=1000)
    assert len(os.listdir(big)) == N_DIRS
    assert sh("ls %s | wc -l" % big).stdout.strip() == str(N_DIRS).encode()

    # a workspace whose descriptor was long evicted, moved to another
    # model: reopened where it is now, its next job runs there
    mini = mnt.model(model="gpt-4o-mini")
    sh("mv %s/d0 %s/moved && echo 'Moved?' > %s/moved/m.prompt" % (big, mini, mini), user=NOBODY)
    assert sh("cat %s/moved/m.response" % mini).stdout == b"echo: Moved?\n"
    assert sh("cat %s/moved/f.txt" % mini).stdout == b"x0\n"
    assert json.load(open(mini + "/moved/m.meta"))["route"] == "openai/us/gpt-4o-mini"
    sh("mv %s/moved %s/d0" % (mini, big), user=NOBODY)

    # and the user cleans up
    sh("rm -rf %s" % big, user=NOBODY, timeout=120)
    assert not os.path.exists(big)
    assert open_fds(pid) < idle + 2000

    assert mnt.unmount() == 0
    log = open(mnt.log).read()
    assert "unmounting" in log
    assert "out of file descriptors" not in log


def errno_of(action):
    try:
        action()
    except OSError as e:
        return e.errno
    return 0


def test_descriptors_run_out_emfile_then_clean_unmount(mnt):
    d = mnt.model()
    pid = mnt.proc.pid
    sh("mkdir %s/ws && echo keep > %s/ws/old.txt" % (d, d))
    os.stat(d + "/ws")
    hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]
    # no descriptor number left to hand out: every one below 8 is taken
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (8, hard))
    try:
        # a request that needs a descriptor is refused with EMFILE, not
        # ENOMEM, and the daemon says so in its log
        assert errno_of(lambda: open(d + "/ws/new.txt", "w").close()) == errno.EMFILE
        assert errno_of(lambda: open(d + "/ws/old.txt").close()) == errno.EMFILE
        # what needs none still works
        assert os.path.isdir(d + "/ws")
        mnt.wait_log("out of file descriptors")
    finally:
        # SIGTERM, with the limit still down: the main thread ends the
        # workers still blocked reading /dev/fuse with pthread_cancel
        mnt.proc.send_signal(signal.SIGTERM)
        try:
            code = mnt.proc.wait(20)
        finally:
            if mnt.proc.poll() is None:
                mnt.unmount()
            mnt.proc = None
            subprocess.run(["fusermount3", "-uz", mnt.path], capture_output=True)
    assert code == 0, open(mnt.log).read()[-2000:]
    log = open(mnt.log).read()
    assert "unmounting" in log
    assert "pthread_cancel" not in log
