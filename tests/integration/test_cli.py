"""The command line (SPEC §1–§2): errors reach the terminal before the
daemon detaches and nothing is mounted; fstab-style mounts; signals;
relative paths; the mountpoint and state_dir checked before mounting; a
dead mount left by kill -9 recovered; systemd's readiness protocol."""
import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile

import pytest

from conftest import (NOBODY, OPENAI_KEY, PROMPTFS, ROOT, default_config, sanitizer_env,
                      sanitizer_reports, sh, wait_for)
from test_tls import tls_cloud, tls_config  # noqa: F401 (tls_cloud is a fixture)

# Where the daemons of the running test write sanitizer reports.
reports_dir = None


@pytest.fixture(autouse=True)
def no_sanitizer_report():
    """Every daemon started here, detached or not, reports to a fresh
    directory; a report in it fails the test."""
    global reports_dir
    reports_dir = tempfile.mkdtemp(prefix="promptfs-cli-reports-")
    os.chmod(reports_dir, 0o755)
    yield
    # a detached daemon writes its leak report as it exits: wait for the
    # test's daemons to be gone
    assert wait_for(lambda: not daemons_running(), 20), "a daemon did not exit"
    reports = sanitizer_reports(reports_dir)
    subprocess.run(["rm", "-rf", reports_dir])
    assert not reports, "sanitizer report:\n" + reports[-8000:]


def daemons_running():
    """Pids of the processes running the promptfs binary under test."""
    exe = os.path.realpath(PROMPTFS)
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink("/proc/%s/exe" % pid) == exe:
                pids.append(int(pid))
        except OSError:
            pass
    return pids


def environ(**extra):
    """The environment of a daemon started by a test (sanitizer reports to
    files: a detached daemon's stderr is /dev/null)."""
    return sanitizer_env(dict(os.environ, **extra), reports_dir)


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="promptfs-cli-")
    os.chmod(d, 0o755)
    os.mkdir(d + "/mnt")
    yield d
    subprocess.run(["fusermount3", "-uz", d + "/mnt"], capture_output=True)
    subprocess.run(["rm", "-rf", d])


def run(args, env=None, timeout=20):
    e = environ(PFS_TEST_OPENAI_KEY=OPENAI_KEY)
    e.update(env or {})
    return subprocess.run([PROMPTFS] + args, capture_output=True, timeout=timeout, env=e)


def write_config(path, cfg, mode=0o644):
    with open(path, "w") as f:
        json.dump(cfg, f)
    os.chmod(path, mode)


def test_version_and_help():
    r = run(["-V"])
    assert r.returncode == 0 and r.stdout.startswith(b"promptfs ")
    r = run(["-h"])
    assert r.returncode == 0 and b"usage: " in r.stdout and b"state_dir=DIR" in r.stdout


@pytest.mark.parametrize("config, message", [
    ('{"clouds": {"a": {"provider": "openai", "regions": {"r": {"models": {"m": {}}}}}}}',
     "clouds.a.regions.r.geo: required"),
    ('{"clouds": {"a": {"provider": "openai", "colour": 1, "regions": {}}}}',
     "clouds.a.colour"),
    ('{"clouds": {"any": {"provider": "openai", "regions": {"r": {"geo": "eu", '
     '"models": {"m": {}}}}}}}', "clouds.any"),
    ('{"clouds": ', "line 1"),
])
def test_bad_config_is_reported_before_detaching_and_nothing_is_mounted(workdir, config, message):
    path = workdir + "/clouds.json"
    with open(path, "w") as f:
        f.write(config)
    r = run([path, workdir + "/mnt", "-o", "state_dir=" + workdir + "/state"])
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err.startswith("promptfs: " + path + ": ")
    assert message in err
    assert not os.path.ismount(workdir + "/mnt")


def test_unknown_option_and_bad_value(workdir, fake):
    path = workdir + "/clouds.json"
    write_config(path, default_config(fake.url))
    r = run(["-o", "timeout=soon", path, workdir + "/mnt"])
    assert r.returncode == 1
    assert b"timeout=soon" in r.stderr
    r = run(["-o", "no_such_option,state_dir=" + workdir + "/s", path, workdir + "/mnt"])
    assert r.returncode == 1
    assert b"no_such_option" in r.stderr
    assert not os.path.ismount(workdir + "/mnt")


@pytest.mark.parametrize("option", [
    "breaker_failures=0", "breaker_failures=many", "breaker_failures=1001",
    "breaker_cooldown=0", "breaker_cooldown=-2", "breaker_cooldown=301",
    "breaker_cooldown=soon", "breaker_cooldown="])
def test_bad_breaker_option_is_refused(workdir, fake, option):
    path = workdir + "/clouds.json"
    write_config(path, default_config(fake.url))
    r = run(["-o", option + ",state_dir=" + workdir + "/s", path, workdir + "/mnt"])
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err.startswith("promptfs: option " + option + ": expected "), err
    assert not os.path.ismount(workdir + "/mnt")


def test_missing_credential_names_the_variable(workdir, fake):
    path = workdir + "/clouds.json"
    write_config(path, default_config(fake.url))
    e = environ()
    e.pop("PFS_TEST_OPENAI_KEY", None)
    r = subprocess.run([PROMPTFS, path, workdir + "/mnt"], capture_output=True, env=e)
    assert r.returncode == 1
    assert b"PFS_TEST_OPENAI_KEY" in r.stderr and b"not set" in r.stderr


def test_readable_secret_file_is_refused_like_ssh(workdir, fake):
    key = workdir + "/key"
    with open(key, "w") as f:
        f.write("sk-in-a-file\n")
    os.chmod(key, 0o644)
    cfg = {"clouds": {"o": {"provider": "openai", "auth": {"api_key_file": key},
                            "regions": {"us": {"geo": "us", "endpoint": fake.url + "/v1",
                                               "models": {"m": {}}}}}}}
    path = workdir + "/clouds.json"
    write_config(path, cfg)
    r = run([path, workdir + "/mnt", "-o", "state_dir=" + workdir + "/s"])
    assert r.returncode == 1
    assert b"readable by group or others" in r.stderr
    assert b"sk-in-a-file" not in r.stderr


def test_print_config_shows_no_secret(workdir, fake):
    path = workdir + "/clouds.json"
    write_config(path, default_config(fake.url))
    r = run(["--print-config", path])
    assert r.returncode == 0
    printed = json.loads(r.stdout)
    assert printed["clouds"]["openai"]["auth"] == {"api_key_env": "PFS_TEST_OPENAI_KEY"}
    assert OPENAI_KEY.encode() not in r.stdout


def test_print_config_says_where_each_key_comes_from_or_that_none_is_sent(workdir, fake):
    cfg = {"clouds": {
        "openai": {"provider": "openai",
                   "regions": {"us": {"geo": "us", "models": {"gpt-4o": {}}}}},
        "local": {"provider": "openai",
                  "regions": {"localhost": {"geo": "local", "endpoint": fake.url + "/v1",
                                            "models": {"llama3.2": {}}}}},
        "vllm": {"provider": "openai", "auth": {"api_key_env": "PFS_TEST_OPENAI_KEY"},
                 "regions": {"lab": {"geo": "local", "endpoint": fake.url + "/v1",
                                     "models": {"qwen": {}}}}},
    }}
    path = workdir + "/clouds.json"
    write_config(path, cfg)
    r = run(["--print-config", path], env={"OPENAI_API_KEY": OPENAI_KEY})
    assert r.returncode == 0, r.stderr
    clouds = json.loads(r.stdout)["clouds"]
    # OPENAI_API_KEY goes to OpenAI's own endpoint only
    assert clouds["openai"]["auth"] == {"api_key_env": "OPENAI_API_KEY"}
    assert clouds["local"]["auth"] == {}
    assert clouds["vllm"]["auth"] == {"api_key_env": "PFS_TEST_OPENAI_KEY"}
    assert OPENAI_KEY.encode() not in r.stdout
    # without the variable, OpenAI itself is sent no key either
    e = environ(PFS_TEST_OPENAI_KEY=OPENAI_KEY)
    e.pop("OPENAI_API_KEY", None)
    r = subprocess.run([PROMPTFS, "--print-config", path], capture_output=True, env=e)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["clouds"]["openai"]["auth"] == {}


def test_daemon_detaches_reloads_on_sighup_and_sigterm_unmounts(workdir, fake):
    key = workdir + "/key"
    with open(key, "w") as f:
        f.write(OPENAI_KEY + "\n")
    os.chmod(key, 0o600)
    cfg = default_config(fake.url)
    cfg["clouds"]["openai"]["auth"] = {"api_key_file": key}
    path = workdir + "/clouds.json"
    write_config(path, cfg)
    mnt = workdir + "/mnt"
    r = run([path, mnt, "-o", "state_dir=%s/s,log=%s/log" % (workdir, workdir)])
    assert r.returncode == 0
    assert os.path.ismount(mnt)
    d = mnt + "/openai/us/gpt-4o"
    sh("echo detached > %s/d.prompt" % d)
    assert sh("cat %s/d.response" % d).stdout == b"echo: detached\n"
    pid = int(subprocess.run(["pgrep", "-f", "state_dir=%s/s" % workdir],
                             capture_output=True).stdout.split()[0])

    # SIGHUP re-reads the config in the detached daemon (whose reload
    # thread was started after the fork): the new key is used at once
    with open(key, "w") as f:
        f.write("sk-revoked-key\n")
    os.kill(pid, signal.SIGHUP)
    assert wait_for(lambda: "config reloaded: credentials of 2 cloud(s) renewed"
                    in open(workdir + "/log").read(), 10)
    assert os.path.ismount(mnt)
    sh("echo after > %s/after.prompt" % d)
    r = sh("cat %s/after.response" % d, check=False)
    assert r.returncode != 0
    assert "HTTP 401" in open(d + "/after.error").readline()
    # the other cloud, whose key did not change, still answers
    sh("echo other > %s/local/localhost/llama3.2/o.prompt" % mnt)
    assert sh("cat %s/local/localhost/llama3.2/o.response" % mnt).stdout == b"echo: other\n"

    os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: not os.path.exists("/proc/%d" % pid), 10)
    assert not os.path.ismount(mnt)
    log = open(workdir + "/log").read()
    assert "mounted" in log and OPENAI_KEY not in log


def test_second_daemon_on_the_same_state_dir_is_refused(mount_factory, workdir):
    m = mount_factory()
    r = run([m.config_path, workdir + "/mnt", "-o", "state_dir=" + m.state])
    assert r.returncode == 1
    assert b"in use by another promptfs" in r.stderr


def test_fstab_style_mount_through_mount_fuse3(workdir, fake):
    path = workdir + "/clouds.json"
    write_config(path, default_config(fake.url))
    mnt = workdir + "/mnt"
    bindir = workdir + "/bin"
    os.mkdir(bindir)
    os.symlink(PROMPTFS, bindir + "/promptfs")
    env = environ(PATH=bindir + ":" + os.environ["PATH"], PFS_TEST_OPENAI_KEY=OPENAI_KEY)
    # what mount(8) runs for an fstab line of type fuse.promptfs (mount
    # itself resets PATH, so the helper is called directly here)
    r = subprocess.run(["mount.fuse3", path, mnt, "-t", "promptfs", "-o",
                        "allow_other,_netdev,nofail,state_dir=%s/s,log=%s/log" % (workdir, workdir)],
                       capture_output=True, env=env, timeout=20)
    assert r.returncode == 0, r.stderr
    try:
        assert sh("df -T %s | tail -1" % mnt).stdout.split()[1] == b"fuse.promptfs"
        sh("echo fstab > %s/local/localhost/llama3.2/f.prompt" % mnt)
        assert sh("cat %s/local/localhost/llama3.2/f.response" % mnt).stdout == b"echo: fstab\n"
    finally:
        subprocess.run(["umount", mnt], capture_output=True)
    assert wait_for(lambda: not os.path.ismount(mnt), 10)


def test_state_dir_inside_the_mount_is_refused(workdir, fake):
    path = workdir + "/clouds.json"
    write_config(path, default_config(fake.url))
    os.makedirs(workdir + "/mnt/state")
    r = run([path, workdir + "/mnt", "-o", "state_dir=" + workdir + "/mnt/state"])
    assert r.returncode == 1
    assert b"inside the mountpoint" in r.stderr


def test_sighup_renews_credentials_and_keeps_the_old_config_when_bad(mount_factory, fake):
    import tempfile as _t
    keydir = _t.mkdtemp(prefix="promptfs-key-")
    key = keydir + "/key"
    with open(key, "w") as f:
        f.write("sk-wrong-key\n")
    os.chmod(key, 0o600)
    cfg = {"clouds": {"o": {"provider": "openai", "auth": {"api_key_file": key},
                            "regions": {"us": {"geo": "us", "endpoint": fake.url + "/v1",
                                               "models": {"m": {}}}}}}}
    m = mount_factory(config=cfg)
    d = m.model("o", "us", "m")
    sh("echo one > %s/a.prompt" % d)
    r = sh("cat %s/a.response" % d, check=False)
    assert r.returncode != 0
    assert "HTTP 401" in open(d + "/a.error").readline()

    with open(key, "w") as f:
        f.write(OPENAI_KEY + "\n")
    m.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "credentials of 1 cloud(s) renewed" in open(m.log).read(), 10)
    sh("echo two > %s/b.prompt" % d)
    assert sh("cat %s/b.response" % d).stdout == b"echo: two\n"

    with open(m.config_path, "w") as f:
        f.write("{ broken")
    m.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "config reload refused" in open(m.log).read(), 10)
    sh("echo three > %s/c.prompt" % d)
    assert sh("cat %s/c.response" % d).stdout == b"echo: three\n"
    assert OPENAI_KEY not in open(m.log).read()
    subprocess.run(["rm", "-rf", keydir])


def test_without_config_the_environment_decides(workdir, fake):
    mnt = workdir + "/mnt"
    env = environ(OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=fake.url + "/v1",
                  OLLAMA_HOST="127.0.0.1:1", HOME=workdir)
    for var in ("ANTHROPIC_API_KEY", "AZURE_OPENAI_ENDPOINT", "AWS_ACCESS_KEY_ID",
                "AWS_REGION", "GOOGLE_APPLICATION_CREDENTIALS"):
        env.pop(var, None)
    r = subprocess.run([PROMPTFS, "--print-config"], capture_output=True, env=env)
    assert r.returncode == 0 and OPENAI_KEY.encode() not in r.stdout
    proc = subprocess.Popen([PROMPTFS, "-f", "-o", "state_dir=%s/s" % workdir, mnt],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: os.path.ismount(mnt), 10)
        assert sorted(os.listdir(mnt)) == [".metrics", ".usage", "any", "openai"]
        sh("echo 'no config' > %s/openai/us/gpt-4o/e.prompt" % mnt)
        assert sh("cat %s/openai/us/gpt-4o/e.response" % mnt).stdout == b"echo: no config\n"
    finally:
        subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
        assert proc.wait(20) == 0


def promptfs_mounts():
    """Mount points of type fuse.promptfs in this namespace's mount table."""
    points = []
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        if fields[fields.index("-") + 1] == "fuse.promptfs":
            points.append(fields[4])
    return points


def test_relative_paths_survive_reload_and_unmount(workdir, tls_cloud):
    """The daemon runs in /: CONFIG, MOUNTPOINT, state_dir, cafile, catalog
    and log given relative to where it was started still mean the same
    files at SIGHUP, at each HTTPS connection and at SIGTERM."""
    write_config(workdir + "/clouds.json", tls_config(tls_cloud.url))
    shutil.copy(tls_cloud.ca, workdir + "/ca.pem")
    shutil.copy(ROOT + "/tests/data/config/catalog_custom.json", workdir + "/catalog.json")
    proc = subprocess.Popen(
        [PROMPTFS, "-f", "-o", "state_dir=st,cafile=ca.pem,catalog=./catalog.json,log=pfs.log",
         "clouds.json", "mnt"],
        cwd=workdir, env=environ(PFS_TEST_OPENAI_KEY=OPENAI_KEY),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mnt, log = workdir + "/mnt", workdir + "/pfs.log"
    try:
        assert wait_for(lambda: os.path.ismount(mnt), 15), "not mounted"
        d = mnt + "/secure/eu/m"
        sh("echo 'over TLS' > %s/a.prompt" % d)
        assert sh("cat %s/a.response" % d).stdout == b"echo: over TLS\n"
        assert os.path.isdir(workdir + "/st/tree/secure")

        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "config reloaded" in open(log).read(), 10), open(log).read()
        assert "reload refused" not in open(log).read()
        sh("echo 'after reload' > %s/b.prompt" % d)
        assert sh("cat %s/b.response" % d).stdout == b"echo: after reload\n"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert not os.path.ismount(mnt)
        os.stat(mnt)  # no "Transport endpoint is not connected" left behind
        assert mnt not in promptfs_mounts()
        assert "mounted %s (state_dir %s/st)" % (mnt, workdir) in open(log).read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_lone_config_argument_is_a_missing_mountpoint(workdir, fake):
    """`promptfs clouds.json` once mounted FUSE over the config file (with
    the environment's clouds, which here would be enough to mount)."""
    write_config(workdir + "/clouds.json", default_config(fake.url))
    env = environ(OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=fake.url + "/v1",
                  OLLAMA_HOST="127.0.0.1:1")
    r = subprocess.run([PROMPTFS, "-o", "state_dir=st", "clouds.json"], cwd=workdir, env=env,
                       capture_output=True, timeout=20)
    if r.returncode == 0:  # mounted over the config: take it away before failing
        subprocess.run(["fusermount3", "-u", workdir + "/clouds.json"], capture_output=True)
    assert r.returncode == 1
    assert r.stderr.decode().startswith("promptfs: missing MOUNTPOINT: %s/clouds.json is a file"
                                        % workdir)
    assert workdir + "/clouds.json" not in promptfs_mounts()
    assert json.load(open(workdir + "/clouds.json")) == default_config(fake.url)
    assert not os.path.exists(workdir + "/st")


def test_the_mountpoint_must_be_an_empty_directory_no_promptfs_serves(mount_factory, workdir,
                                                                     fake):
    path = workdir + "/clouds.json"
    write_config(path, default_config(fake.url))
    mnt = workdir + "/mnt"
    state = "state_dir=" + workdir + "/s"

    # a regular file as MOUNTPOINT
    r = run([path, path, "-o", state])
    assert r.returncode == 1
    assert r.stderr == b"promptfs: mountpoint %s is not a directory\n" % path.encode()

    # a directory with something in it: refused, unless -o nonempty
    open(mnt + "/keep.txt", "w").close()
    r = run([path, mnt, "-o", state])
    assert r.returncode == 1
    assert b"mountpoint %s is not empty" % mnt.encode() in r.stderr
    assert b"-o nonempty" in r.stderr
    assert not os.path.ismount(mnt)
    r = run([path, mnt, "-o", state + ",nonempty"])
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(mnt)) == [".metrics", ".usage", "any", "local", "openai"]
    sh("fusermount3 -u " + mnt)
    assert os.listdir(mnt) == ["keep.txt"]
    os.unlink(mnt + "/keep.txt")

    # a live promptfs mount: refused, and it keeps serving
    m = mount_factory()
    r = run([path, m.path, "-o", state])
    assert r.returncode == 1
    assert r.stderr == (b"promptfs: mountpoint %s is already a promptfs mount; unmount it "
                        b"first (fusermount3 -u %s)\n" % (m.path.encode(), m.path.encode()))
    sh("echo still > %s/s.prompt" % m.model())
    assert sh("cat %s/s.response" % m.model()).stdout == b"echo: still\n"


def kill_9(m):
    """Kills M's daemon with SIGKILL and waits for it."""
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait()
    m.proc = None


@contextlib.contextmanager
def detached_on_failure(m):
    """For a test whose daemon M was killed: if it fails before M runs
    again, the mount left behind is detached (the fixture unmounts only
    what it runs)."""
    try:
        yield
    except BaseException:
        if m.proc is None:
            subprocess.run(["fusermount3", "-uz", m.path], capture_output=True)
        raise


def start_again(m, over_dead_mount):
    """Starts M's daemon again, and waits until it has mounted; OVER_DEAD_MOUNT:
    the killed daemon's mount is still there, for the start to detach
    (start() took it for a mount)."""
    m.start()
    if over_dead_mount:
        m.wait_log("unmounted (lazily) a dead promptfs mount left by a daemon", timeout=15)
    m.wait_log("mounted " + m.path, count=2, timeout=15)


def test_after_kill_9_the_next_start_recovers_the_dead_mount(mount_factory):
    m = mount_factory()
    d = m.model()
    sh("echo before > %s/a.prompt" % d)
    assert sh("cat %s/a.response" % d).stdout == b"echo: before\n"
    kill_9(m)
    with detached_on_failure(m):
        with pytest.raises(OSError) as dead:
            os.statvfs(m.path)  # stat may still answer from the kernel's cache
        assert dead.value.errno == errno.ENOTCONN
        assert m.path in promptfs_mounts()
        start_again(m, over_dead_mount=True)  # no fusermount3 -u in between
    assert promptfs_mounts().count(m.path) == 1
    assert open(d + "/a.response").read() == "echo: before\n"
    sh("echo after > %s/b.prompt" % d)
    assert sh("cat %s/b.response" % d).stdout == b"echo: after\n"


def fusermount3_watching(path):
    """The live fusermount3 processes whose command line names PATH:
    auto_unmount's watchers."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
            with open("/proc/%s/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if os.path.basename(argv[0]) == b"fusermount3" and path.encode() in argv and state != "Z":
            pids.append(int(pid))
    return pids


def test_auto_unmount_clears_the_mount_when_the_daemon_dies(mount_factory):
    """libfuse's auto_unmount passes through: fusermount3 stays beside the
    daemon and unmounts when it dies."""
    m = mount_factory(options=("auto_unmount",))
    # dies while it serves, not while it is still starting
    sh("echo first > %s/a.prompt" % m.model())
    assert sh("cat %s/a.response" % m.model()).stdout == b"echo: first\n"
    assert fusermount3_watching(m.path), "no fusermount3 beside the daemon"
    kill_9(m)
    with detached_on_failure(m):
        # fusermount3 notices when it is next scheduled: a loaded machine
        # may take a while
        assert wait_for(lambda: m.path not in promptfs_mounts() or
                        not fusermount3_watching(m.path), 60)
        left_dead = m.path in promptfs_mounts()
        if left_dead:
            # libfuse's own race: fusermount3 unmounts only when the mount
            # answers ENOTCONN, and the kernel may not have cut the dead
            # daemon's connection yet when it looks (ECONNABORTED): it
            # then leaves the mount, dead, for the next start to detach
            with pytest.raises(OSError) as e:
                os.listdir(m.path)
            assert e.value.errno == errno.ENOTCONN
        else:
            assert os.listdir(m.path) == []
        start_again(m, over_dead_mount=left_dead)
    assert promptfs_mounts().count(m.path) == 1
    sh("echo again > %s/b.prompt" % m.model())
    assert sh("cat %s/b.response" % m.model()).stdout == b"echo: again\n"


def test_a_state_dir_open_to_others_is_made_0700(mount_factory, workdir):
    state = workdir + "/state"
    os.mkdir(state, 0o755)
    os.chmod(state, 0o755)
    m = mount_factory(state_dir=state)
    assert os.stat(state).st_mode & 0o7777 == 0o700
    assert ("state_dir %s was mode 0755, open to other users; it is now 0700" % state
            in open(m.log).read())
    sh("echo private > %s/p.prompt" % m.model())
    assert sh("cat %s/p.response" % m.model()).stdout == b"echo: private\n"
    r = sh("cat %s/tree/openai/us/gpt-4o/p.response" % state, user=NOBODY, check=False)
    assert r.returncode != 0 and b"Permission denied" in r.stderr


def test_a_state_dir_the_daemon_cannot_restrict_is_refused(workdir, fake):
    path = workdir + "/clouds.json"
    write_config(path, default_config(fake.url))
    state = workdir + "/state"
    os.mkdir(state)
    os.chmod(state, 0o755)  # root's: a daemon run as nobody cannot chmod it
    e = environ(PFS_TEST_OPENAI_KEY=OPENAI_KEY)
    r = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                        "--clear-groups", PROMPTFS, "-f", "-o", "state_dir=" + state, path,
                        workdir + "/mnt"], capture_output=True, env=e, timeout=20)
    assert r.returncode == 1
    assert (b"promptfs: state_dir %s is mode 0755 and cannot be made 0700 (Operation not "
            b"permitted)" % state.encode()) in r.stderr
    assert os.stat(state).st_mode & 0o7777 == 0o755
    assert not os.path.ismount(workdir + "/mnt")


@pytest.fixture
def notify_socket(workdir):
    """A datagram socket standing in for systemd's notification socket;
    yields (socket, NOTIFY_SOCKET value) for a path and an abstract name."""
    made = []

    def make(abstract):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "promptfs-test-%d-%d" % (os.getpid(), len(made))
            s.bind("\0" + name)
            value = "@" + name
        else:
            value = workdir + "/notify.sock"
            s.bind(value)
        s.settimeout(20)
        made.append(s)
        return s, value

    yield make
    for s in made:
        s.close()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_systemd_is_told_ready_once_mounted_and_stopping_at_unmount(workdir, fake,
                                                                    notify_socket, abstract):
    sock, address = notify_socket(abstract)
    path = workdir + "/clouds.json"
    write_config(path, default_config(fake.url))
    mnt = workdir + "/mnt"
    proc = subprocess.Popen([PROMPTFS, "-f", "-o", "state_dir=%s/s" % workdir, path, mnt],
                            env=environ(PFS_TEST_OPENAI_KEY=OPENAI_KEY, NOTIFY_SOCKET=address),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        message = sock.recv(4096).decode()
        # the mount answers the moment the manager hears it is ready
        assert os.path.ismount(mnt)
        assert sorted(os.listdir(mnt)) == [".metrics", ".usage", "any", "local", "openai"]
        assert "READY=1" in message.split("\n"), message
        sh("echo ready > %s/local/localhost/llama3.2/r.prompt" % mnt)
        assert sh("cat %s/local/localhost/llama3.2/r.response" % mnt).stdout == b"echo: ready\n"

        if abstract:
            proc.send_signal(signal.SIGTERM)
        else:
            sh("fusermount3 -u " + mnt)
        message = sock.recv(4096).decode()
        assert "STOPPING=1" in message.split("\n"), message
        assert proc.wait(20) == 0
        assert not os.path.ismount(mnt)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_systemd_unit_verifies(workdir):
    """examples/promptfs.service as systemd reads it: Type=notify, and
    `systemd-analyze verify` has nothing to say about it."""
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    probe = workdir + "/probe.service"
    with open(probe, "w") as f:
        f.write("[Service]\nType=oneshot\nExecStart=/bin/true\n")
    r = subprocess.run([analyze, "verify", probe], capture_output=True, timeout=60)
    if r.returncode != 0 or r.stderr:
        pytest.skip("systemd-analyze verify cannot run here: %s" % r.stderr.decode()[-500:])

    unit = open(ROOT + "/examples/promptfs.service").read()
    service = dict(line.split("=", 1) for line in unit.splitlines()
                   if "=" in line and not line.startswith("#"))
    assert service["Type"] == "notify"
    exec_start = service["ExecStart"].split()
    assert exec_start[1] == "-f"  # the daemon itself must be the main process
    # verify checks that the binary exists: point it at the one under test
    copy = workdir + "/promptfs.service"
    with open(copy, "w") as f:
        f.write(unit.replace(exec_start[0] + " ", PROMPTFS + " "))
    r = subprocess.run([analyze, "verify", copy], capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()


@pytest.mark.skipif(os.path.exists("/dev/log"), reason="a syslog listens here: nothing to warn of")
def test_detached_without_a_syslog_warns_on_stderr_before_detaching(workdir, fake):
    path = workdir + "/clouds.json"
    write_config(path, default_config(fake.url))
    mnt = workdir + "/mnt"
    r = run([path, mnt, "-o", "state_dir=%s/s" % workdir])
    try:
        assert r.returncode == 0 and os.path.ismount(mnt)
        assert (b"promptfs: warning: no syslog answers at /dev/log: the log is lost "
                b"(use -o log=FILE, or -f to log on stderr)\n") in r.stderr
    finally:
        subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
    assert wait_for(lambda: not os.path.ismount(mnt), 10)
