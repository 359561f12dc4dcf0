"""The command line (SPEC §1–§2): errors reach the terminal before the
daemon detaches and nothing is mounted; fstab-style mounts; signals."""
import json
import os
import signal
import subprocess
import tempfile

import pytest

from conftest import (OPENAI_KEY, PROMPTFS, default_config, sanitizer_env, sanitizer_reports, sh,
                      wait_for)

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
        assert sorted(os.listdir(mnt)) == [".usage", "any", "openai"]
        sh("echo 'no config' > %s/openai/us/gpt-4o/e.prompt" % mnt)
        assert sh("cat %s/openai/us/gpt-4o/e.response" % mnt).stdout == b"echo: no config\n"
    finally:
        subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
        assert proc.wait(20) == 0
