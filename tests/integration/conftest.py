"""Shared fixtures of the mounted-filesystem tests: the fake cloud, and
promptfs mounts driven through real tools and real system calls."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROMPTFS = os.environ.get("PROMPTFS_BIN", os.path.join(ROOT, "build", "fs", "promptfs"))
FAKECLOUD = os.path.join(ROOT, "tests", "fakecloud", "fakecloud.py")
PYTHON = "/usr/bin/python3"

OPENAI_KEY = "sk-test-7d1f0c2a9b"
NOBODY = 65534


# Where each sanitizer writes its reports (files PREFIX.PID): a detached
# daemon's stderr is /dev/null, so they must not go to stderr only.
SANITIZER_LOGS = (("ASAN_OPTIONS", "asan"), ("UBSAN_OPTIONS", "ubsan"), ("TSAN_OPTIONS", "tsan"))
SANITIZER_MARKERS = ("runtime error:", "AddressSanitizer", "LeakSanitizer", "ThreadSanitizer")


def sanitizer_env(env, directory):
    """ENV with every sanitizer's reports sent to files in DIRECTORY, the
    other options (from tests/run.sh) kept."""
    env = dict(env)
    for var, prefix in SANITIZER_LOGS:
        options = env.get(var, "")
        env[var] = (options + ":" if options else "") + "log_path=%s/%s" % (directory, prefix)
    return env


def sanitizer_reports(directory, logs=()):
    """Every sanitizer report written to DIRECTORY's report files or to
    one of LOGS (the daemons' stderr); "" when there is none."""
    text = ""
    prefixes = tuple(prefix + "." for _, prefix in SANITIZER_LOGS)
    for name in sorted(os.listdir(directory)):
        if name.startswith(prefixes):
            text += open(os.path.join(directory, name), errors="replace").read()
    for log in logs:
        content = open(log, errors="replace").read() if os.path.exists(log) else ""
        if any(marker in content for marker in SANITIZER_MARKERS):
            text += content
    return text


class FakeCloud:
    def __init__(self, workdir, extra_args=()):
        self.workdir = workdir
        self.log = os.path.join(workdir, "fakecloud.log")
        port_file = os.path.join(workdir, "fakecloud.port")
        self.proc = subprocess.Popen(
            [PYTHON, FAKECLOUD, "--port", "0", "--port-file", port_file,
             "--openai-key", OPENAI_KEY, "--log", self.log, *extra_args],
            stdout=subprocess.DEVNULL, stderr=open(self.log + ".stderr", "w"))
        deadline = time.time() + 15
        while time.time() < deadline:
            if os.path.exists(port_file) and open(port_file).read().strip():
                self.port = int(open(port_file).read().strip())
                break
            if self.proc.poll() is not None:
                raise RuntimeError("fake cloud exited: " + open(self.log + ".stderr").read())
            time.sleep(0.05)
        else:
            raise RuntimeError("fake cloud did not start")
        self.url = "http://127.0.0.1:%d" % self.port

    def stats(self):
        with urllib.request.urlopen(self.url + "/_stats", timeout=5) as r:
            return json.load(r)

    def control(self, path, body=None, method=None):
        """A control endpoint (/_faults, /_requests, ...): BODY as JSON when
        given (POST), else GET, unless METHOD says otherwise; its JSON answer."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method or
                                     ("POST" if data is not None else "GET"),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def open_gate(self, name):
        """Lets the answers held by [[fault:gate name=NAME]] go on."""
        with urllib.request.urlopen(self.url + "/_open?gate=" + name, timeout=5) as r:
            assert json.load(r)["ok"]

    def completions(self):
        """{sha256 of a prompt text: how many times an answer to it was sent
        whole} (the fake's GET /_completions)."""
        with urllib.request.urlopen(self.url + "/_completions", timeout=5) as r:
            return json.load(r)

    def requests_for(self, text):
        """How many valid API requests carried the prompt TEXT."""
        return self.stats()["by_prompt"].get(prompt_digest(text), 0)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def default_config(fake_url):
    return {
        "clouds": {
            "openai": {
                "provider": "openai",
                "auth": {"api_key_env": "PFS_TEST_OPENAI_KEY"},
                "regions": {"us": {"geo": "us", "endpoint": fake_url + "/v1",
                                   "models": {"gpt-4o": {}, "gpt-4o-mini": {}}}},
            },
            "local": {
                "provider": "openai",
                "auth": {"api_key_env": "PFS_TEST_OPENAI_KEY"},
                "regions": {"localhost": {"geo": "local", "endpoint": fake_url + "/v1",
                                          "models": {"llama3.2": {}}}},
            },
        }
    }


class Mount:
    """One promptfs daemon in the foreground, mounted on a fresh directory."""

    def __init__(self, workdir, config, options=(), env=None, state_dir=None):
        self.workdir = workdir
        self.path = os.path.join(workdir, "mnt")
        self.state = state_dir or os.path.join(workdir, "state")
        self.config_path = os.path.join(workdir, "clouds.json")
        self.log = os.path.join(workdir, "promptfs.log")
        self.options = ["state_dir=" + self.state, "allow_other", *options]
        self.env = sanitizer_env(dict(os.environ, PFS_TEST_OPENAI_KEY=OPENAI_KEY, **(env or {})),
                                 workdir)
        os.makedirs(self.path, exist_ok=True)
        with open(self.config_path, "w") as f:
            json.dump(config, f)
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [PROMPTFS, "-f", "-o", ",".join(self.options), self.config_path, self.path],
            stdout=open(self.log, "a"), stderr=subprocess.STDOUT, env=self.env)
        deadline = time.time() + 15
        while not os.path.ismount(self.path):
            if self.proc.poll() is not None:
                raise RuntimeError("promptfs exited %d: %s" % (self.proc.returncode,
                                                                 open(self.log).read()))
            if time.time() > deadline:
                raise RuntimeError("promptfs did not mount")
            time.sleep(0.02)

    def model(self, cloud="openai", region="us", model="gpt-4o"):
        return os.path.join(self.path, cloud, region, model)

    def unmount(self):
        if self.proc is None:
            return 0
        for _ in range(50):
            r = subprocess.run(["fusermount3", "-u", self.path], capture_output=True)
            if r.returncode == 0 or not os.path.ismount(self.path):
                break
            time.sleep(0.1)
        else:
            subprocess.run(["fusermount3", "-uz", self.path], capture_output=True)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        subprocess.run(["fusermount3", "-uz", self.path], capture_output=True)

    def sanitizer_reports(self):
        return sanitizer_reports(self.workdir, [self.log])

    def wait_log(self, text, count=1, timeout=30):
        """Waits until the daemon's log holds TEXT COUNT times."""
        assert wait_for(lambda: open(self.log).read().count(text) >= count, timeout), \
            "the daemon did not log %r %d times:\n%s" % (text, count, open(self.log).read()[-2000:])


@pytest.fixture(scope="session")
def fake(tmp_path_factory):
    cloud = FakeCloud(str(tmp_path_factory.mktemp("fakecloud")))
    yield cloud
    cloud.stop()


@pytest.fixture
def mount_factory(fake):
    mounts = []
    # under /tmp and open to all: tests run commands as other uids, which
    # must reach the mountpoint (pytest's own tmp_path is private to root)
    base = tempfile.mkdtemp(prefix="promptfs-test-")
    os.chmod(base, 0o755)

    def make(config=None, options=(), env=None, state_dir=None, workdir=None):
        wd = workdir or os.path.join(base, "m%d" % len(mounts))
        os.makedirs(wd, exist_ok=True)
        os.chmod(wd, 0o755)
        m = Mount(wd, config or default_config(fake.url), options, env, state_dir)
        mounts.append(m)
        return m

    yield make
    problems = []
    for m in mounts:
        code = m.unmount()
        if code not in (0, None):
            problems.append("promptfs exited %d:\n%s" % (code, open(m.log).read()[-4000:]))
        reports = m.sanitizer_reports()
        if reports:
            problems.append("sanitizer report:\n" + reports[-8000:])
    if not problems:
        shutil.rmtree(base, ignore_errors=True)
    assert not problems, "\n".join(problems)


@pytest.fixture
def mnt(mount_factory):
    return mount_factory()


def sh(cmd, check=True, timeout=60, user=None, **kw):
    """Runs CMD with bash, optionally as another uid; returns the result."""
    argv = ["bash", "-c", cmd]
    if user is not None:
        argv = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user, "--clear-groups"] + argv
    r = subprocess.run(argv, capture_output=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError("command failed (%d): %s\nstdout: %r\nstderr: %r" %
                             (r.returncode, cmd, r.stdout, r.stderr))
    return r


def read_meta(path):
    with open(path) as f:
        return json.load(f)


def read_all(path):
    """Reads PATH as cat does; returns (bytes, errno or 0)."""
    fd = os.open(path, os.O_RDONLY)
    data = b""
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return data, 0
            data += chunk
    except OSError as e:
        return data, e.errno
    finally:
        os.close(fd)


def wait_finished(d, name, timeout=30):
    """Waits until NAME's job has ended; returns its .meta."""
    path = os.path.join(d, name + ".meta")
    assert wait_for(lambda: read_meta(path)["status"] not in ("queued", "running"), timeout), \
        "job %s did not end" % name
    return read_meta(path)


def wait_for(predicate, timeout=15, interval=0.05):
    """Polls PREDICATE until it holds (True) or TIMEOUT seconds pass (False).
    Tests wait on the condition itself, never on a guessed delay."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def prompt_digest(text):
    """The fake cloud's key of a prompt text (SHA-256 hex of its UTF-8), as in
    /_stats by_prompt and /_completions."""
    return hashlib.sha256(text.encode()).hexdigest()


def long_answer(text, size):
    """The fake cloud's answer to TEXT carrying [[fault:long bytes=SIZE]]:
    `echo: TEXT` padded with the digits 0-9 repeated to SIZE bytes."""
    answer = "echo: " + text
    missing = size - len(answer.encode())
    if missing > 0:
        answer += ("0123456789" * (missing // 10 + 1))[:missing]
    return answer
