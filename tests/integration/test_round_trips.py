"""How many requests one prompt round trip costs the daemon, and that what
makes it cheap (the kernel's caches) never serves stale data."""
import collections
import errno
import os
import re
import select
import stat

import pytest

from conftest import (NOBODY, FakeCloud, default_config, read_all, read_meta, sh, wait_finished,
                      wait_for)

REQUEST = re.compile(r"unique: \d+, opcode: ([A-Z_0-9]+) \(\d+\), nodeid: (\d+)")
MAX_REQUESTS = 10


def requests_in_log(log):
    """Every request libfuse's debug output (-o debug) logged, in order:
    [(opcode, nodeid)]."""
    with open(log, errors="replace") as f:
        return [(m.group(1), int(m.group(2))) for m in REQUEST.finditer(f.read())]


def count_requests(mnt, marker_fd, action, log=None):
    """Runs ACTION and returns the FUSE requests the daemon received while
    it ran, as a Counter of opcodes (and in LOG, when given, as a list of
    (opcode, nodeid)). The daemon must run with -o debug. ACTION is
    framed by two statfs calls on MARKER_FD (a descriptor, so no lookup),
    an opcode a round trip never sends; a release, sent by the kernel
    after close() returned, is waited for before the second one."""
    before = len(requests_in_log(mnt.log))
    os.fstatvfs(marker_fd)
    assert wait_for(lambda: "STATFS" in [op for op, _ in requests_in_log(mnt.log)[before:]])
    action()

    def releases_done():
        ops = [op for op, _ in requests_in_log(mnt.log)[before:]]
        return ops.count("RELEASE") >= ops.count("OPEN") + ops.count("CREATE")

    assert wait_for(releases_done, 10)
    os.fstatvfs(marker_fd)
    assert wait_for(lambda: [op for op, _ in requests_in_log(mnt.log)[before:]]
                    .count("STATFS") >= 2)
    reqs = requests_in_log(mnt.log)[before:]
    ops = [op for op, _ in reqs]
    first = ops.index("STATFS")
    last = len(ops) - 1 - ops[::-1].index("STATFS")
    print("requests:", " ".join("%s(%d)" % r for r in reqs[first + 1:last]))
    if log is not None:
        log.extend(reqs[first + 1:last])
    return collections.Counter(ops[first + 1:last])


def round_trip(d, name, text):
    """NAME.prompt written and closed, NAME.response read to its end."""
    fd = os.open(os.path.join(d, name + ".prompt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text)
    finally:
        os.close(fd)
    return read_all(os.path.join(d, name + ".response"))


@pytest.fixture(scope="module")
def whole_answers(tmp_path_factory):
    """A fake cloud that sends each answer in one piece, so that a reader
    needs exactly two reads (the bytes, then the end) and the count does
    not depend on how the stream was cut."""
    cloud = FakeCloud(str(tmp_path_factory.mktemp("fakecloud-whole")),
                      ["--chunk-bytes", "65536"])
    yield cloud
    cloud.stop()


def test_one_round_trip_costs_at_most_ten_requests(mount_factory, whole_answers):
    mnt = mount_factory(config=default_config(whole_answers.url), options=("debug",))
    d = mnt.model()
    marker = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        # a first job under the name, so that this measures the common
        # case: a script asking again under a name it used before
        assert round_trip(d, "rt", b"warm up\n") == (b"echo: warm up\n", 0)
        results = []
        again = count_requests(mnt, marker, lambda: results.append(
            round_trip(d, "rt", b"how many requests?\n")))
        # the best of three new names: the .response's attributes serve
        # its open for 0.1 s, which an opener descheduled between its
        # lookup and its permission check (a loaded machine) may miss
        tries = []
        for i in range(3):
            log = []
            counts = count_requests(mnt, marker, lambda: results.append(
                round_trip(d, "new%d" % i, b"a new name\n")), log)
            tries.append((sum(counts.values()), counts, log))
            if tries[-1][0] <= MAX_REQUESTS + 1:
                break
        fresh, fresh_log = min(tries, key=lambda t: t[0])[1:]
    finally:
        os.close(marker)
    assert results == [(b"echo: how many requests?\n", 0)] + \
        [(b"echo: a new name\n", 0)] * len(tries)
    print("round trip, name used before: %d %s" % (sum(again.values()), dict(again)))
    print("round trip, new name: %s" % ["%d %s" % (n, dict(c)) for n, c, _ in tries])
    assert sum(again.values()) <= MAX_REQUESTS, dict(again)
    # A name's first use costs one more, which the kernel asks with
    # default_permissions whatever we answer: the negative LOOKUP before
    # CREATE and a GETATTR of the directory, whose attributes the CREATE
    # invalidated, before the new .response is looked up; the .response's
    # own GETATTR is gone (its LOOKUP's attributes serve the open).
    assert sum(fresh.values()) <= MAX_REQUESTS + 1, dict(fresh)
    model_dir = [ino for op, ino in fresh_log if op == "CREATE"][0]
    assert [ino for op, ino in fresh_log if op == "GETATTR"] == [model_dir], fresh_log
    # writes ask for no security.capability; only O_TRUNC of an existing
    # prompt still does, in the VFS's truncate, which only a superblock
    # marked SB_NOSEC (FUSE_HANDLE_KILLPRIV_V2, which libfuse 3.14 cannot
    # ask for) would spare
    assert "GETXATTR" not in fresh and again["GETXATTR"] <= 1


def finished_jobs(mnt, ws, n):
    """N finished jobs j0..j{N-1} in workspace WS of the default model, and
    a plain file: their files as a daemon leaves them, written into
    state_dir/tree directly (the mount serves what is there)."""
    os.mkdir(os.path.join(mnt.model(), ws))
    tree = os.path.join(mnt.state, "tree", "openai", "us", "gpt-4o", ws)
    want = {}
    for i in range(n):
        prompt = b"question %d\n" % i
        files = {"j%d.prompt" % i: (prompt, 0o644), "j%d.response" % i: (b"echo: " + prompt, 0o644),
                 "j%d.meta" % i: (b'{"status":"done"}\n', 0o644)}
        for name, (data, mode) in files.items():
            with open(os.path.join(tree, name), "wb") as f:
                f.write(data)
            os.chmod(os.path.join(tree, name), mode)
            want[name] = len(data)
    with open(os.path.join(tree, "notes.txt"), "wb") as f:
        f.write(b"notes\n")
    want["notes.txt"] = 6
    return want


def ls_l(path):
    """{name: (mode string, size)} of `ls -l PATH`."""
    out = sh("LC_ALL=C ls -l %s" % path).stdout.decode()
    return {f[-1]: (f[0], int(f[4])) for f in (line.split() for line in out.splitlines()[1:])}


def test_ls_l_costs_no_request_per_entry(mount_factory):
    """ls -l asks each entry's attributes and its security.selinux and
    system.posix_acl_access: the attributes come with the entries
    (READDIRPLUS) and stay cached, the extended attributes are answered
    ENOTSUP once, after which ls stops asking on this file system. Only
    the listing itself costs requests."""
    mnt = mount_factory(options=("debug",))
    want = finished_jobs(mnt, "big", 100)
    ws = os.path.join(mnt.model(), "big")
    marker = os.open(mnt.model(), os.O_RDONLY | os.O_DIRECTORY)
    listings = []
    try:
        cold = count_requests(mnt, marker, lambda: listings.append(ls_l(ws)))
        warm = count_requests(mnt, marker, lambda: listings.append(ls_l(ws)))
    finally:
        os.close(marker)
    print("ls -l of %d entries, first: %s; again: %s" % (len(want), dict(cold), dict(warm)))
    for listing in listings:
        assert {name: size for name, (_, size) in listing.items()} == want
        # generated files read-only, the others as written
        assert listing["j7.response"][0] == "-r--r--r--"
        assert listing["j7.prompt"][0] == "-rw-r--r--"
    for counts in (cold, warm):
        # at most the path to the workspace, should its cached entries
        # have expired meanwhile: nothing per entry
        assert counts["LOOKUP"] + counts["GETATTR"] <= 10, dict(counts)
        assert counts["GETXATTR"] <= 2, dict(counts)
        assert sum(counts.values()) < len(want) / 10, dict(counts)
    assert cold["READDIRPLUS"] >= 1


def test_xattrs_outside_user_are_not_supported(mnt):
    d = mnt.model()
    with open(d + "/notes.txt", "w") as f:
        f.write("x")
    for path in (d, d + "/notes.txt"):
        for name in ("security.selinux", "system.posix_acl_access", "trusted.x",
                     "security.capability"):
            with pytest.raises(OSError) as e:
                os.getxattr(path, name)
            assert e.value.errno == errno.ENOTSUP, (path, name)
            with pytest.raises(OSError) as e:
                os.removexattr(path, name)
            assert e.value.errno == errno.ENOTSUP, (path, name)
        with pytest.raises(OSError) as e:
            os.getxattr(path, "user.colour")
        assert e.value.errno == errno.ENODATA
    # the policy's own names are untouched, after ls has given up on the
    # other namespaces
    sh("ls -l %s" % d)
    os.setxattr(d, "user.policy.retries", b"1")
    assert os.getxattr(d, "user.policy.retries") == b"1"
    assert os.listxattr(d) == ["user.policy.retries"]
    os.removexattr(d, "user.policy.retries")
    with pytest.raises(OSError) as e:
        os.getxattr(d, "user.policy.retries")
    assert e.value.errno == errno.ENODATA


def test_a_growing_response_is_never_cut_by_a_cached_size(mnt):
    """While an answer streams, every stat caches a size; no reader ever
    takes it for the end, and no stat after a read shows less than what
    that read returned."""
    d = mnt.model()
    text = "grow past every cached size [[fault:stall after=30 seconds=2]]"
    want = ("echo: " + text).encode()
    with open(d + "/cached.prompt", "w") as f:
        f.write(text)
    path = d + "/cached.response"
    fd = os.open(path, os.O_RDONLY)
    late = None
    try:
        got = b""
        while True:
            os.stat(path)
            chunk = os.read(fd, 5)
            if not chunk:
                break
            got += chunk
            assert os.stat(path).st_size >= len(got)
            assert os.fstat(fd).st_size >= len(got)
            if late is None and len(got) >= 30:
                # stalled at 30 bytes: the size is cached, yet a reader
                # opened now reads past it and is not told it ended
                assert os.stat(path).st_size < len(want)
                late = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                seen = os.read(late, 4096)
                assert want.startswith(seen) and len(seen) >= 30
                with pytest.raises(BlockingIOError):
                    os.read(late, 4096)
        assert got == want
        rest = seen
        while True:
            try:
                chunk = os.read(late, 4096)
            except BlockingIOError:
                select.select([late], [], [], 10)
                continue
            if not chunk:
                break
            rest += chunk
        assert rest == want
        assert os.stat(path).st_size == len(want)
        assert os.fstat(fd).st_size == len(want)
    finally:
        os.close(fd)
        if late is not None:
            os.close(late)


def test_a_response_nobody_reads_shows_its_final_size_when_done(mnt):
    """Without a reader (whose reads would make the kernel ask again),
    the size a stat cached is dropped by the daemon as the answer grows:
    the moment .meta says done, stat says the final size."""
    d = mnt.model()
    text = "watched, never read [[fault:stall after=10 seconds=1]]"
    want = len("echo: " + text)
    with open(d + "/watched.prompt", "w") as f:
        f.write(text)
    sizes = []
    while True:
        sizes.append(os.stat(d + "/watched.response").st_size)
        if read_meta(d + "/watched.meta")["status"] == "done":
            break
        assert len(sizes) < 100000, sizes[-10:]
    assert os.stat(d + "/watched.response").st_size == want, sorted(set(sizes))
    assert 10 in sizes


def test_cached_attributes_follow_rewrites_and_removals(mnt):
    """ls -l caches the attributes of finished jobs' files for a second;
    what replaces or removes them through the mount is seen at once."""
    d = mnt.model()
    sh("echo 'a rather long question, to have a long answer' > %s/re.prompt" % d)
    sh("echo 'failing [[fault:status code=400]]' > %s/bad.prompt" % d)
    assert sh("cat %s/re.response" % d).stdout == \
        b"echo: a rather long question, to have a long answer\n"
    assert sh("cat %s/bad.response" % d, check=False).returncode != 0
    wait_finished(d, "re")
    wait_finished(d, "bad")
    listing = ls_l(d)
    assert listing["bad.error"][1] > 0 and listing["re.response"][1] > 40
    # a shorter answer under the same name: its size at once
    sh("echo 'short' > %s/re.prompt" % d)
    assert sh("cat %s/re.response" % d).stdout == b"echo: short\n"
    assert os.stat(d + "/re.response").st_size == len(b"echo: short\n")
    wait_finished(d, "re")
    assert ls_l(d)["re.response"][1] == len(b"echo: short\n")
    # a failed job rewritten to succeed: its .error is gone at once
    sh("echo 'fine now' > %s/bad.prompt" % d)
    with pytest.raises(FileNotFoundError):
        os.stat(d + "/bad.error")
    assert sh("cat %s/bad.response" % d).stdout == b"echo: fine now\n"
    # removed and moved away after a listing cached them
    wait_finished(d, "bad")
    ls_l(d)
    os.unlink(d + "/re.prompt")
    os.rename(d + "/bad.prompt", d + "/bad.txt")
    for name in ("re.response", "re.meta", "bad.response", "bad.meta"):
        with pytest.raises(FileNotFoundError):
            os.stat(os.path.join(d, name))
        with pytest.raises(FileNotFoundError):
            open(os.path.join(d, name), "rb")
    assert sorted(os.listdir(d)) == [".usage", "bad.txt"]


def test_permissions_follow_chmod_and_chown_at_once(mnt):
    """Attributes of workspaces and files are cached, and the kernel checks
    permissions (default_permissions) against them: a chmod or chown
    through the mount is what the next check of another user sees."""
    d = mnt.model()
    other = 4242
    sh("mkdir %s/shared && echo data > %s/shared/f.txt && chmod 644 %s/shared/f.txt" % (d, d, d),
       user=NOBODY)
    ws = d + "/shared"
    # cached by a listing and a read as the other user
    assert sh("ls -l %s && cat %s/f.txt" % (ws, ws), user=other).returncode == 0
    sh("chmod 700 %s" % ws, user=NOBODY)
    r = sh("ls %s" % ws, user=other, check=False)
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    r = sh("cat %s/f.txt" % ws, user=other, check=False)
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    sh("chmod 755 %s" % ws, user=NOBODY)
    assert sh("cat %s/f.txt" % ws, user=other).stdout == b"data\n"
    sh("chmod 600 %s/f.txt" % ws, user=NOBODY)
    r = sh("cat %s/f.txt" % ws, user=other, check=False)
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    # given away by root: the new owner may read it at once, the old one not
    sh("ls -l %s" % ws, user=NOBODY)
    os.chown(ws + "/f.txt", other, other)
    assert sh("cat %s/f.txt" % ws, user=other).stdout == b"data\n"
    r = sh("cat %s/f.txt" % ws, user=NOBODY, check=False)
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    assert os.stat(ws + "/f.txt").st_uid == other


def test_a_slow_stream_reads_whole(mnt):
    d = mnt.model()
    text = "abcdefghijklmnopqrstuvwxyz0123456789 [[fault:stall after=10 seconds=1]]"
    sh("echo '%s' > %s/slow.prompt" % (text, d))
    assert sh("cat %s/slow.response" % d).stdout == ("echo: %s\n" % text).encode()
    text = "late [[fault:slow_first_byte seconds=1]]"
    sh("echo '%s' > %s/late.prompt" % (text, d))
    assert sh("cat %s/late.response" % d).stdout == ("echo: %s\n" % text).encode()


def test_stat_of_a_growing_response_then_its_final_size(mnt):
    d = mnt.model()
    text = "growing answer, stat each step [[fault:stall after=10 seconds=1.5]]"
    want = len("echo: " + text)
    with open(d + "/grow.prompt", "w") as f:
        f.write(text)
    fd = os.open(d + "/grow.response", os.O_RDONLY)
    try:
        first = os.read(fd, 4096)
        assert 0 < len(first) <= 10
        sizes = []
        assert wait_for(lambda: sizes.append(os.stat(d + "/grow.response").st_size) or
                        sizes[-1] == 10, 10), "sizes seen: %r" % sizes
        assert os.fstat(fd).st_size == 10
        rest = b""
        while True:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            rest += chunk
        assert len(first + rest) == want
        # the moment the answer ended, by name and by descriptor
        assert os.stat(d + "/grow.response").st_size == want
        assert os.fstat(fd).st_size == want
    finally:
        os.close(fd)
    assert os.stat(d + "/grow.response").st_size == want


def test_a_prompt_rewritten_at_once_gives_the_new_answer(mnt):
    d = mnt.model()
    for i in range(5):
        sh("echo 'question %d' > %s/again.prompt" % (i, d))
        assert sh("cat %s/again.response" % d).stdout == b"echo: question %d\n" % i
        assert os.stat(d + "/again.response").st_size == len(b"echo: question %d\n" % i)
    # a longer then a shorter answer, read through the same path at once
    sh("echo 'a much longer question this time' > %s/again.prompt" % d)
    assert sh("cat %s/again.response" % d).stdout == b"echo: a much longer question this time\n"
    sh("echo 'short' > %s/again.prompt" % d)
    assert sh("cat %s/again.response" % d).stdout == b"echo: short\n"
    assert os.stat(d + "/again.response").st_size == len(b"echo: short\n")


def test_a_removed_prompt_and_its_files_are_gone_at_once(mnt):
    d = mnt.model()
    sh("echo 'here' > %s/gone.prompt && cat %s/gone.response" % (d, d))
    assert os.path.exists(d + "/gone.response")
    os.unlink(d + "/gone.prompt")
    for name in ("gone.prompt", "gone.response", "gone.meta"):
        assert not os.path.exists(os.path.join(d, name)), name
        with pytest.raises(FileNotFoundError):
            open(os.path.join(d, name), "rb")
    sh("echo 'back' > %s/gone.prompt" % d)
    assert sh("cat %s/gone.response" % d).stdout == b"echo: back\n"


def test_a_set_id_prompt_written_by_its_owner_loses_the_bits(mnt):
    """As on ext4: a write by a writer without CAP_FSETID clears
    set-user-ID, and set-group-ID when group execution is allowed; root
    keeps them."""
    d = mnt.model()
    p = d + "/suid.prompt"
    sh("echo 'first' > %s && chmod 6755 %s" % (p, p), user=NOBODY)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o6755
    # appended: no truncation, whose own clearing the kernel does
    sh("echo 'more' >> %s" % p, user=NOBODY)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o0755
    # set-group-ID without group execution is a lock mark: it stays
    sh("chmod 2745 %s && echo 'again' >> %s" % (p, p), user=NOBODY)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o2745
    # and it is what the disk says, not only what the kernel was told
    assert stat.S_IMODE(os.stat(os.path.join(mnt.state, "tree", "openai", "us", "gpt-4o",
                                             "suid.prompt")).st_mode) == 0o2745
    sh("chmod 6755 %s" % p, user=NOBODY)
    sh("echo 'by root' >> %s" % p)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o6755
    # the direct writes appended where they should
    assert open(p).read() == "first\nmore\nagain\nby root\n"
