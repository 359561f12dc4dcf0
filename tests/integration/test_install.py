"""Installed like a Debian package (issue 10, item 14): `meson install` into
a DESTDIR ships the binary, promptfs(8), the systemd unit, the logrotate
file (once examples/ has one) and the examples under share/doc, nothing
else, with a package's modes; the man page has no warnings and documents
every option and errno; the installed unit runs the installed binary; the
fstab line of examples/ mounts through mount(8), nosuid and nodev, with
the binary found where docs/contract.md (the one place that says) says,
whatever PATH is."""
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile

import pytest

from conftest import OPENAI_KEY, PROMPTFS, ROOT, sanitizer_env, sanitizer_reports, wait_for

BUILD = os.path.dirname(os.path.dirname(os.path.abspath(PROMPTFS)))
# What dash, Debian's /bin/sh, searches when PATH is not set: mount.fuse3
# runs promptfs through it, and mount(8) removes PATH
SHELL_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def build_options():
    r = subprocess.run(["meson", "introspect", "--buildoptions", BUILD],
                       capture_output=True, check=True)
    return {o["name"]: o["value"] for o in json.loads(r.stdout)}


class Layout:
    """Where this build directory installs each file (its meson options)."""

    def __init__(self):
        o = build_options()
        self.prefix = o["prefix"]

        def under_prefix(path):
            return os.path.join(self.prefix, path)

        self.bindir = under_prefix(o["bindir"])
        self.mandir = under_prefix(o["mandir"])
        self.docdir = os.path.join(under_prefix(o["datadir"]), "doc", "promptfs")
        self.unitdir = o["systemdsystemunitdir"] or under_prefix("lib/systemd/system")
        self.logrotatedir = (o["logrotatedir"] or
                             os.path.join(under_prefix(o["sysconfdir"]), "logrotate.d"))
        r = subprocess.run(["meson", "introspect", "--projectinfo", BUILD],
                           capture_output=True, check=True)
        self.version = json.loads(r.stdout)["version"]

    def expected(self):
        """{installed path: mode}: what a package of promptfs ships."""
        files = {
            self.bindir + "/promptfs": 0o755,
            self.mandir + "/man8/promptfs.8": 0o644,
            self.unitdir + "/promptfs.service": 0o644,
            self.docdir + "/README.md": 0o644,
            self.docdir + "/contract.md": 0o644,
        }
        # every example but the quickstart, which builds from the source
        # tree; the unit and the logrotate file go where they are read
        for name in os.listdir(ROOT + "/examples"):
            if name in ("quickstart.sh", "promptfs.service", "logrotate"):
                continue
            files[self.docdir + "/examples/" + name] = 0o644
        if os.path.exists(ROOT + "/examples/logrotate"):
            files[self.logrotatedir + "/promptfs"] = 0o644
        return files


@pytest.fixture(scope="module")
def installed():
    """(DESTDIR, Layout) after `meson install` of the build under test."""
    dest = tempfile.mkdtemp(prefix="promptfs-destdir-")
    r = subprocess.run(["meson", "install", "-C", BUILD, "--no-rebuild", "--quiet",
                        "--destdir", dest], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    yield dest, Layout()
    shutil.rmtree(dest, ignore_errors=True)


def installed_files(dest):
    """{path as installed: mode} of every file under DEST."""
    found = {}
    for top, dirs, files in os.walk(dest):
        for name in files:
            path = os.path.join(top, name)
            found["/" + os.path.relpath(path, dest)] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


def test_meson_install_ships_what_a_package_would_and_nothing_else(installed):
    dest, layout = installed
    found = installed_files(dest)
    expected = layout.expected()
    assert sorted(found) == sorted(expected)
    wrong = {path: "%o" % mode for path, mode in found.items() if mode != expected[path]}
    assert not wrong, "modes differ from a package's: %r" % wrong
    # documentation is data: nothing under share/doc runs (Debian policy 12.3)
    assert not [p for p, m in found.items() if p.startswith(layout.docdir) and m & 0o111]
    # the sources' texts, unchanged
    for name in ("README.md", "examples/clouds.json", "examples/askai.cbl"):
        installed_copy = dest + layout.docdir + "/" + name
        assert open(installed_copy, "rb").read() == open(ROOT + "/" + name, "rb").read()
    assert (open(dest + layout.docdir + "/contract.md", "rb").read() ==
            open(ROOT + "/docs/contract.md", "rb").read())


def test_the_installed_binary_runs_and_checks_the_installed_example_config(installed):
    dest, layout = installed
    binary = dest + layout.bindir + "/promptfs"
    r = subprocess.run([binary, "-V"], capture_output=True, timeout=20,
                       env=sanitizer_env(os.environ, dest))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().startswith("promptfs %s " % layout.version)
    r = subprocess.run([binary, "--check", dest + layout.docdir + "/examples/clouds.json"],
                       capture_output=True, timeout=20, env=sanitizer_env(os.environ, dest))
    assert r.returncode == 0, r.stderr.decode()
    assert b": OK: " in r.stdout
    assert not sanitizer_reports(dest)


def man_page_text(path):
    """PATH rendered as man(1) shows it, and man's warnings (what lintian
    runs on a package's man pages)."""
    if not shutil.which("man"):
        pytest.skip("man is not installed (Debian package man-db)")
    env = dict(os.environ, LC_ALL="C.UTF-8", MANROFFSEQ="", MANWIDTH="80")
    r = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", path],
                       capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    warnings = r.stderr.decode()
    r = subprocess.run(["man", "-l", path], capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    # plain text: no overstriking, no hyphenation at line ends
    text = re.sub(r".\x08", "", r.stdout.decode())
    text = re.sub(r"[\u2010-]\n\s*", "", text)
    return text, warnings


def help_options():
    """The options `promptfs -h` lists: the command line's, and the names
    of the -o options (the left column of the lines below `-o`)."""
    r = subprocess.run([PROMPTFS, "-h"], capture_output=True, timeout=20)
    text = r.stdout.decode() + r.stderr.decode()
    options = set()
    for short, long in re.findall(r"(?m)^\s+(-\w|--[\w-]+)(?:, (--[\w-]+))?", text):
        options |= {short, long} - {""}
    mount_options = set()
    below_o = False
    for line in text.splitlines():
        if re.match(r"\s+-o ", line):
            below_o = True
        elif below_o and line.strip():
            left = re.split(r"\s{2,}", line.strip())[0]
            mount_options |= set(re.findall(r"(?:^|, )([a-z_]+)", left))
    return options, mount_options


def test_the_man_page_has_no_warnings_and_documents_every_option_and_errno(installed):
    dest, layout = installed
    page = dest + layout.mandir + "/man8/promptfs.8"
    text, warnings = man_page_text(page)
    assert warnings == ""
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONFIGURATION", "THE TREE",
                    "FILES OF A JOB", "POLICIES", "ERRORS", "SIGNALS", "EXIT STATUS",
                    "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"):
        assert re.search(r"(?m)^%s$" % section, text), "no section " + section

    options, mount_options = help_options()
    assert {"-h", "--help", "-V", "-f", "-d", "--check", "--print-config", "-o"} <= options
    assert {"state_dir", "max_inflight", "timeout", "catalog", "nonempty",
            "allow_other"} <= mount_options
    for option in options:
        assert re.search(r"(?m)^\s+(-\S+, )?%s\b" % re.escape(option), text), "option " + option
    for option in mount_options:
        assert re.search(r"\b%s\b" % re.escape(option), text), "-o %s" % option

    # every errno the README and docs/contract.md name for users
    documented = set()
    for doc in ("README.md", "docs/contract.md"):
        documented |= set(re.findall(r"`(E[A-Z]{2,})`", open(ROOT + "/" + doc).read()))
    assert {"EACCES", "EDQUOT", "EFBIG", "EILSEQ", "EIO"} <= documented
    missing = [e for e in sorted(documented) if not re.search(r"\b%s\b" % e, text)]
    assert not missing, "errnos the docs name and the man page does not: %s" % missing

    # this installation's paths, the batch rule, the fstab line of examples/
    for path in (layout.bindir + "/promptfs", layout.unitdir + "/promptfs.service",
                 layout.docdir + "/examples/clouds.json", layout.docdir + "/contract.md"):
        assert path in text, path
    assert '"status":"done"' in text and "NAME.error" in text
    assert fstab_line() in text.replace("\n       ", " ")
    assert "promptfs %s" % layout.version in text


def test_the_installed_unit_is_the_example_running_the_installed_binary(installed, tmp_path):
    dest, layout = installed
    unit = open(dest + layout.unitdir + "/promptfs.service").read()
    example = open(ROOT + "/examples/promptfs.service").read()
    exec_start = re.search(r"(?m)^ExecStart=(\S+) ", unit).group(1)
    assert exec_start == layout.bindir + "/promptfs"
    assert unit == example.replace("ExecStart=/usr/local/bin/promptfs ", "ExecStart=%s " % exec_start)
    assert "nosuid,nodev" in re.search(r"(?m)^ExecStart=.*$", unit).group(0)

    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    probe = tmp_path / "probe.service"
    probe.write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")
    r = subprocess.run([analyze, "verify", str(probe)], capture_output=True, timeout=60)
    if r.returncode != 0 or r.stderr:
        pytest.skip("systemd-analyze verify cannot run here: %s" % r.stderr.decode()[-500:])
    # verify wants the binary present: the staged one stands in for it
    copy = tmp_path / "promptfs.service"
    copy.write_text(unit.replace("ExecStart=%s " % exec_start,
                                 "ExecStart=%s " % (dest + exec_start)))
    r = subprocess.run([analyze, "verify", str(copy)], capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()


def test_the_installed_logrotate_file_parses(installed, tmp_path):
    dest, layout = installed
    if not os.path.exists(ROOT + "/examples/logrotate"):
        pytest.skip("examples/logrotate does not exist (it comes with the audit log)")
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    if not os.path.exists(logrotate):
        pytest.skip("logrotate is not installed")
    r = subprocess.run([logrotate, "--debug", "--state", str(tmp_path / "state"),
                        dest + layout.logrotatedir + "/promptfs"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0 and b"error" not in r.stderr.lower(), r.stderr.decode()


def fstab_line():
    lines = [line for line in open(ROOT + "/examples/fstab").read().splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(lines) == 1
    return lines[0]


def test_one_place_says_where_the_binary_must_be_and_it_is_true():
    """docs/contract.md lists the directories; the other documents point
    to it and repeat no list of their own; and the list is what /bin/sh
    searches without PATH here."""
    contract = open(ROOT + "/docs/contract.md").read()
    assert SHELL_SEARCH_PATH in contract
    r = subprocess.run(["env", "-i", "/bin/sh", "-c", "echo $PATH"], capture_output=True)
    assert r.stdout.decode().strip() == SHELL_SEARCH_PATH
    for doc in ("README.md", "examples/README.md", "examples/fstab", "man/promptfs.8.in"):
        text = open(ROOT + "/" + doc).read()
        assert "contract.md" in text and "Command line" in text, doc
        assert SHELL_SEARCH_PATH not in text, doc
        assert not re.search(r"must be (installed )?in /", text), doc


def test_the_fstab_line_mounts_nosuid_nodev_through_mount_finding_the_binary_without_path(fake):
    """`mount MOUNTPOINT` with examples/fstab's line (its paths moved to a
    temporary directory), in a private mount namespace where the binary
    under test is in /usr/local/sbin and PATH points elsewhere: mount(8)
    finds it as docs/contract.md says, the mount is nosuid,nodev, and a
    prompt is answered. Without the binary there, PATH does not help."""
    if not shutil.which("unshare"):
        pytest.skip("unshare is not installed (Debian package util-linux)")
    config, mountpoint, fstype, options, dump, passno = fstab_line().split()
    assert fstype == "fuse.promptfs"
    assert {"allow_other", "nosuid", "nodev", "_netdev"} <= set(options.split(","))
    workdir = tempfile.mkdtemp(prefix="promptfs-fstab-")
    os.chmod(workdir, 0o755)
    try:
        for d in ("bin", "mnt"):
            os.mkdir(os.path.join(workdir, d))
        os.symlink(os.path.abspath(PROMPTFS), workdir + "/bin/promptfs")
        # fstab mounts get no environment: the key is a file, as the
        # comment of examples/fstab says
        key = workdir + "/openai.key"
        with open(key, "w") as f:
            f.write(OPENAI_KEY)
        os.chmod(key, 0o600)
        cfg = {"clouds": {"local": {
            "provider": "openai", "auth": {"api_key_file": key},
            "regions": {"localhost": {"geo": "local", "endpoint": fake.url + "/v1",
                                      "models": {"llama3.2": {}}}}}}}
        with open(workdir + "/clouds.json", "w") as f:
            json.dump(cfg, f)
        line = fstab_line().replace(config, workdir + "/clouds.json", 1)
        line = line.replace(" %s " % mountpoint, " %s/mnt " % workdir, 1)
        line = re.sub(r"state_dir=[^, ]+", "state_dir=%s/state,log=%s/log" % (workdir, workdir),
                      line)
        with open(workdir + "/fstab", "w") as f:
            f.write(line + "\n")
        model = workdir + "/mnt/local/localhost/llama3.2"
        script = """
            mount --bind {w}/bin /usr/local/sbin || exit 77
            PATH={w}/nowhere /usr/bin/mount --fstab {w}/fstab {w}/mnt || exit 1
            grep " {w}/mnt " /proc/self/mountinfo > {w}/mountinfo
            echo fstab > {model}/f.prompt && /usr/bin/cat {model}/f.response > {w}/answer
            /usr/bin/umount {w}/mnt
            /usr/bin/umount /usr/local/sbin
            # without the binary in the search path, PATH is no help
            PATH={w}/bin:$PATH /usr/bin/mount --fstab {w}/fstab {w}/mnt 2> {w}/refused &&
                {{ /usr/bin/umount {w}/mnt; exit 2; }}
            exit 0
        """.format(w=workdir, model=model)
        env = sanitizer_env(os.environ, workdir)
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", script],
                           capture_output=True, timeout=60, env=env)
        if r.returncode == 77 or (r.returncode != 0 and b"unshare" in r.stderr):
            pytest.skip("no private mount namespace here: %s" % r.stderr.decode())
        log = open(workdir + "/log").read() if os.path.exists(workdir + "/log") else ""
        assert r.returncode == 0, r.stderr.decode() + log
        fields = open(workdir + "/mountinfo").read().split()
        assert "fuse.promptfs" in fields
        assert {"nosuid", "nodev"} <= set(fields[5].split(","))
        assert open(workdir + "/answer").read() == "echo: fstab\n"
        assert "promptfs: not found" in open(workdir + "/refused").read()
        # the detached daemon is gone once its mount is
        exe = os.path.realpath(PROMPTFS)

        def daemon_left():
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    if (os.readlink("/proc/%s/exe" % pid) == exe and
                            workdir in open("/proc/%s/cmdline" % pid).read()):
                        return True
                except OSError:
                    pass
            return False
        assert wait_for(lambda: not daemon_left(), 20)
        assert not sanitizer_reports(workdir, [workdir + "/log"])
    finally:
        subprocess.run(["rm", "-rf", workdir])
