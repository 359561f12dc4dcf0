"""Where a directory's policy is kept (SPEC §6.1, §6.3): the user.policy.*
extended attributes and the .policy file are two views of one policy, in
the canonical forms of fs/policy.c; only admins change it, anyone reads it,
an invalid one is refused and the previous one stays; user.effective.*
shows the policy in force after composition down the tree."""
import errno
import os
import shlex

import pytest

from conftest import NOBODY, PYTHON, read_all, sh, wait_for


def policy_file(d):
    return os.path.join(d, ".policy")


def read_bytes(path):
    data, err = read_all(path)
    assert err == 0, "reading %s: errno %d" % (path, err)
    return data


def xattr_errno(call, *args):
    """The errno of CALL(*ARGS), which must fail."""
    with pytest.raises(OSError) as e:
        call(*args)
    return e.value.errno


def getfattr_value(d, key, user=None):
    """getfattr's raw value of KEY on D (as USER): bytes exactly."""
    return sh("getfattr --only-values -n %s %s" % (key, shlex.quote(d)), user=user).stdout


def try_as(uid, code):
    """Runs the python statements CODE (one per line, `os` and `errno`
    imported) as UID; returns "OK", or the name of the errno of the first
    OSError they raised."""
    body = "".join("    " + line + "\n" for line in code.strip().splitlines())
    script = ("import errno, os\ntry:\n%sexcept OSError as e:\n"
              "    print(errno.errorcode[e.errno])\nelse:\n    print('OK')\n" % body)
    return sh("%s -c %s" % (PYTHON, shlex.quote(script)), user=uid).stdout.decode().strip()


def write_policy(path, text, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
    """Writes TEXT to PATH as a program would; returns the errno of close()
    (0 when it succeeded). open() and write() must succeed."""
    fd = os.open(path, flags, 0o644)
    try:
        assert os.write(fd, text) == len(text)
    except BaseException:
        os.close(fd)
        raise
    try:
        os.close(fd)
    except OSError as e:
        return e.errno
    return 0


# 1. user.policy.KEY: set with setfattr, read back in canonical text

def test_setfattr_then_getfattr_gives_the_value_exactly(mount_factory):
    m = mount_factory()
    d = m.model()
    r = sh("setfattr -n user.policy.residency -v eu %s" % d)
    assert r.returncode == 0
    assert getfattr_value(d, "user.policy.residency") == b"eu"
    assert os.getxattr(d, "user.policy.residency") == b"eu"


def test_xattr_values_read_back_in_canonical_form(mount_factory):
    m = mount_factory()
    d = m.model()
    cases = [
        ("residency", b"eu, us", b"eu,us"),
        ("providers", b"openai", b"openai"),
        ("max_request_usd", b"0.25", b"0.25"),
        ("max_request_usd", b"50.0", b"50"),
        ("max_output_tokens", b"500", b"500"),
        ("fallback", b"true", b"true"),
        ("audit_prompts", b"false", b"false"),
        ("order", b"price", b"price"),
        ("umask", b"77", b"077"),
        ("system", b"Be brief.", b"Be brief."),
    ]
    for key, given, canonical in cases:
        os.setxattr(d, "user.policy." + key, given)
        assert os.getxattr(d, "user.policy." + key) == canonical, key
        assert getfattr_value(d, "user.policy." + key) == canonical, key


# 2. every xattr change is mirrored in .policy

def test_xattr_changes_are_mirrored_in_policy_file(mount_factory):
    m = mount_factory()
    d = m.model()
    sh("setfattr -n user.policy.residency -v eu %s" % d)
    sh("setfattr -n user.policy.max_request_usd -v 0.25 %s" % d)
    assert read_bytes(policy_file(d)) == \
        b'{\n  "residency": ["eu"],\n  "max_request_usd": 0.25\n}\n'
    os.setxattr(d, "user.policy.umask", b"77")
    os.setxattr(d, "user.policy.fallback", b"true")
    os.setxattr(d, "user.policy.providers", b"openai, local")
    assert read_bytes(policy_file(d)) == (
        b'{\n'
        b'  "providers": ["openai", "local"],\n'
        b'  "residency": ["eu"],\n'
        b'  "max_request_usd": 0.25,\n'
        b'  "fallback": true,\n'
        b'  "umask": "077"\n'
        b'}\n')
    sh("setfattr -x user.policy.residency %s" % d)
    assert read_bytes(policy_file(d)) == (
        b'{\n'
        b'  "providers": ["openai", "local"],\n'
        b'  "max_request_usd": 0.25,\n'
        b'  "fallback": true,\n'
        b'  "umask": "077"\n'
        b'}\n')


# 3. writing .policy

def test_writing_policy_file_sets_the_xattrs_and_reads_canonical(mount_factory):
    m = mount_factory()
    d = m.model()
    r = sh("echo '{\"providers\": [\"azure\"]}' > %s/.policy" % d)
    assert r.returncode == 0
    assert os.getxattr(d, "user.policy.providers") == b"azure"
    assert os.listxattr(d) == ["user.policy.providers"]
    assert read_bytes(policy_file(d)) == b'{\n  "providers": ["azure"]\n}\n'
    # a whole new text replaces the policy: keys it does not name are gone
    sh("echo '{\"retries\":3, \"residency\": \"eu\"}' > %s/.policy" % d)
    assert read_bytes(policy_file(d)) == b'{\n  "residency": ["eu"],\n  "retries": 3\n}\n'
    assert os.getxattr(d, "user.policy.retries") == b"3"
    assert os.getxattr(d, "user.policy.residency") == b"eu"
    assert xattr_errno(os.getxattr, d, "user.policy.providers") == errno.ENODATA


def test_invalid_policy_file_is_refused_at_close_and_previous_kept(mount_factory):
    m = mount_factory()
    d = m.model()
    sh("echo '{\"providers\": [\"azure\"], \"retries\": 4}' > %s/.policy" % d)
    before = b'{\n  "providers": ["azure"],\n  "retries": 4\n}\n'
    assert read_bytes(policy_file(d)) == before
    for bad in (b'{"providers": [\n',            # not JSON
                b'{"colour": "red"}\n',           # unknown key
                b'{"retries": 11}\n',             # bad value
                b'{"retries": 3, "umask": 77}\n',  # one bad value among good ones
                b'["azure"]\n'):                  # not an object
        assert write_policy(policy_file(d), bad) == errno.EINVAL, bad
        assert read_bytes(policy_file(d)) == before, bad
        assert os.getxattr(d, "user.policy.providers") == b"azure", bad
        assert os.getxattr(d, "user.policy.retries") == b"4", bad
        assert os.listxattr(d) == ["user.policy.providers", "user.policy.retries"], bad
    # where there was no policy, a refused one leaves none
    ws = os.path.join(d, "ws")
    os.mkdir(ws)
    assert write_policy(policy_file(ws), b'{"retries": 11}\n') == errno.EINVAL
    assert wait_for(lambda: not os.path.exists(policy_file(ws)), 2)
    assert os.listxattr(ws) == []
    assert xattr_errno(os.getxattr, ws, "user.policy.retries") == errno.ENODATA


def test_empty_policy_leaves_no_policy_file(mount_factory):
    m = mount_factory()
    d = m.model()
    sh("echo '{\"providers\": [\"azure\"]}' > %s/.policy" % d)
    assert os.path.exists(policy_file(d))
    sh("echo '{}' > %s/.policy" % d)
    assert wait_for(lambda: not os.path.exists(policy_file(d)), 2)
    assert ".policy" not in os.listdir(d)
    assert os.listxattr(d) == []
    assert xattr_errno(os.getxattr, d, "user.policy.providers") == errno.ENODATA
    # {} where there is no policy creates none
    sh("echo '{}' > %s/.policy" % d)
    assert wait_for(lambda: not os.path.exists(policy_file(d)), 2)


def test_removing_every_key_leaves_no_policy_file(mount_factory):
    m = mount_factory()
    d = m.model()
    sh("setfattr -n user.policy.residency -v eu %s" % d)
    sh("setfattr -n user.policy.retries -v 3 %s" % d)
    assert os.path.exists(policy_file(d))
    sh("setfattr -x user.policy.residency %s" % d)
    assert read_bytes(policy_file(d)) == b'{\n  "retries": 3\n}\n'
    sh("setfattr -x user.policy.retries %s" % d)
    assert wait_for(lambda: not os.path.exists(policy_file(d)), 2)
    assert ".policy" not in os.listdir(d)
    assert os.listxattr(d) == []


# 4. errnos of the xattr calls

def test_xattr_errnos(mount_factory):
    m = mount_factory()
    d = m.model()
    os.setxattr(d, "user.policy.retries", b"3")
    # bad value, unknown key: EINVAL, the previous value kept
    assert xattr_errno(os.setxattr, d, "user.policy.retries", b"11") == errno.EINVAL
    assert os.getxattr(d, "user.policy.retries") == b"3"
    assert xattr_errno(os.setxattr, d, "user.policy.colour", b"red") == errno.EINVAL
    assert os.listxattr(d) == ["user.policy.retries"]
    r = sh("setfattr -n user.policy.retries -v 11 %s" % d, check=False)
    assert r.returncode != 0 and b"Invalid argument" in r.stderr, r
    assert os.getxattr(d, "user.policy.retries") == b"3"
    # a key not set here: ENODATA
    assert xattr_errno(os.getxattr, d, "user.policy.residency") == errno.ENODATA
    assert xattr_errno(os.removexattr, d, "user.policy.residency") == errno.ENODATA
    # XATTR_CREATE on a key set, XATTR_REPLACE on one not set
    assert xattr_errno(os.setxattr, d, "user.policy.retries", b"4",
                       os.XATTR_CREATE) == errno.EEXIST
    assert os.getxattr(d, "user.policy.retries") == b"3"
    assert xattr_errno(os.setxattr, d, "user.policy.residency", b"eu",
                       os.XATTR_REPLACE) == errno.ENODATA
    assert xattr_errno(os.getxattr, d, "user.policy.residency") == errno.ENODATA
    # and the other way round they work
    os.setxattr(d, "user.policy.retries", b"4", os.XATTR_REPLACE)
    assert os.getxattr(d, "user.policy.retries") == b"4"
    os.setxattr(d, "user.policy.residency", b"eu", os.XATTR_CREATE)
    assert os.getxattr(d, "user.policy.residency") == b"eu"
    # removed: ENODATA again
    os.removexattr(d, "user.policy.retries")
    assert xattr_errno(os.getxattr, d, "user.policy.retries") == errno.ENODATA
    assert xattr_errno(os.removexattr, d, "user.policy.retries") == errno.ENODATA


# 5. listxattr

def test_listxattr_lists_the_keys_set_here_in_spec_order(mount_factory):
    m = mount_factory()
    d = m.model()
    assert os.listxattr(d) == []
    # set in an order that is neither SPEC's nor alphabetical
    os.setxattr(d, "user.policy.umask", b"077")
    os.setxattr(d, "user.policy.fallback", b"false")
    os.setxattr(d, "user.policy.providers", b"openai")
    os.setxattr(d, "user.policy.max_request_usd", b"1")
    assert os.listxattr(d) == ["user.policy.providers", "user.policy.max_request_usd",
                               "user.policy.fallback", "user.policy.umask"]
    r = sh("getfattr -d -m - --absolute-names %s" % d)
    lines = r.stdout.decode().splitlines()
    assert lines[0] == "# file: " + d
    assert sorted(line for line in lines[1:] if line) == sorted([
        'user.policy.providers="openai"', 'user.policy.max_request_usd="1"',
        'user.policy.fallback="false"', 'user.policy.umask="077"'])
    # only this directory's own keys: not the parent's, not the child's
    ws = os.path.join(d, "ws")
    os.mkdir(ws)
    assert os.listxattr(ws) == []
    os.setxattr(ws, "user.policy.retries", b"1")
    assert os.listxattr(ws) == ["user.policy.retries"]
    os.removexattr(d, "user.policy.fallback")
    assert os.listxattr(d) == ["user.policy.providers", "user.policy.max_request_usd",
                               "user.policy.umask"]


# 6. non-admins

def test_non_admin_cannot_change_policy_but_may_read_it(mount_factory):
    m = mount_factory()
    d = m.model()
    os.setxattr(d, "user.policy.residency", b"us")
    before = read_bytes(policy_file(d))
    # setfattr as nobody on a model directory: refused (by the kernel,
    # the directory being sticky, or by the daemon)
    r = sh("setfattr -n user.policy.residency -v eu %s" % d, check=False, user=NOBODY)
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr, r
    r = sh("setfattr -x user.policy.residency %s" % d, check=False, user=NOBODY)
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr, r
    assert os.getxattr(d, "user.policy.residency") == b"us"
    # anyone reads: xattr and .policy
    assert getfattr_value(d, "user.policy.residency", user=NOBODY) == b"us"
    assert sh("cat %s/.policy" % d, user=NOBODY).stdout == before
    # on a workspace nobody owns, only the daemon can refuse: EPERM
    ws = os.path.join(d, "ws")
    sh("mkdir %s" % ws, user=NOBODY)
    assert os.stat(ws).st_uid == NOBODY
    assert try_as(NOBODY, "os.setxattr(%r, 'user.policy.retries', b'3')" % ws) == "EPERM"
    assert xattr_errno(os.getxattr, ws, "user.policy.retries") == errno.ENODATA
    # nor by writing .policy, there or where root set one
    code = ("fd = os.open(%r, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\n"
            "os.write(fd, b'{\"retries\": 3}')\n"
            "os.close(fd)")
    assert try_as(NOBODY, code % policy_file(ws)) in ("EACCES", "EPERM")
    assert wait_for(lambda: not os.path.exists(policy_file(ws)), 2)
    assert os.listxattr(ws) == []
    assert try_as(NOBODY, code % policy_file(d)) in ("EACCES", "EPERM")
    assert read_bytes(policy_file(d)) == before
    assert os.listxattr(d) == ["user.policy.residency"]


def test_non_admin_cannot_remove_policy_file_but_root_can(mount_factory):
    m = mount_factory()
    d = m.model()
    os.setxattr(d, "user.policy.residency", b"us")
    before = read_bytes(policy_file(d))
    r = sh("rm -f %s/.policy" % d, check=False, user=NOBODY)
    assert r.returncode != 0, r
    assert read_bytes(policy_file(d)) == before
    assert os.getxattr(d, "user.policy.residency") == b"us"
    # in a workspace nobody owns, the kernel lets the unlink through: the
    # daemon refuses it
    ws = os.path.join(d, "ws")
    sh("mkdir %s" % ws, user=NOBODY)
    os.setxattr(ws, "user.policy.retries", b"3")
    assert try_as(NOBODY, "os.unlink(%r)" % policy_file(ws)) == "EPERM"
    assert read_bytes(policy_file(ws)) == b'{\n  "retries": 3\n}\n'
    assert os.getxattr(ws, "user.policy.retries") == b"3"
    # root removes the policy with rm
    sh("rm %s/.policy" % d)
    assert wait_for(lambda: not os.path.exists(policy_file(d)), 2)
    assert xattr_errno(os.getxattr, d, "user.policy.residency") == errno.ENODATA
    assert os.listxattr(d) == []


# 7. admin_uid

def test_admin_uid_may_set_policy_on_workspace_and_model(mount_factory):
    m = mount_factory(options=("admin_uid=%d" % NOBODY,))
    d = m.model()
    ws = os.path.join(d, "ws")
    sh("mkdir %s" % ws, user=NOBODY)
    r = sh("setfattr -n user.policy.retries -v 3 %s" % ws, check=False, user=NOBODY)
    assert r.returncode == 0, r
    assert os.getxattr(ws, "user.policy.retries") == b"3"
    assert read_bytes(policy_file(ws)) == b'{\n  "retries": 3\n}\n'
    # A model directory is sticky and root's: the kernel lets only its
    # owner set xattrs there (EPERM before the daemon is asked), so an
    # admin who is not root writes its .policy instead
    r = sh("setfattr -n user.policy.residency -v eu %s" % d, check=False, user=NOBODY)
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    r = sh("echo '{\"residency\": \"eu\"}' > %s/.policy" % d, check=False, user=NOBODY)
    assert r.returncode == 0, r
    assert os.getxattr(d, "user.policy.residency") == b"eu"
    assert read_bytes(policy_file(d)) == b'{\n  "residency": ["eu"]\n}\n'


# 8. user.effective.KEY

def test_effective_values_compose_down_the_tree(mount_factory):
    m = mount_factory()
    d = m.model()
    ws = os.path.join(d, "ws")
    os.mkdir(ws)
    # nothing set: the defaults, and nothing for an unconstrained list
    for where in (d, ws, m.path):
        assert os.getxattr(where, "user.effective.max_prompt_bytes") == b"1048576", where
        assert os.getxattr(where, "user.effective.retries") == b"2", where
        assert xattr_errno(os.getxattr, where, "user.effective.providers") == errno.ENODATA
        assert xattr_errno(os.getxattr, where, "user.effective.budget_usd") == errno.ENODATA
    assert os.getxattr(ws, "user.effective.fallback") == b"false"
    sh("setfattr -n user.policy.providers -v openai,azure %s" % m.path)
    sh("setfattr -n user.policy.providers -v openai,local %s" % d)
    sh("setfattr -n user.policy.max_request_usd -v 1 %s" % m.path)
    sh("setfattr -n user.policy.max_request_usd -v 0.5 %s" % ws)
    sh("setfattr -n user.policy.retries -v 5 %s" % m.path)
    sh("setfattr -n user.policy.budget_usd -v 10 %s" % ws)
    # constraint: intersection; cap: smallest; preference: nearest
    assert os.getxattr(ws, "user.effective.providers") == b"openai"
    assert getfattr_value(ws, "user.effective.providers") == b"openai"
    assert os.getxattr(ws, "user.effective.max_request_usd") == b"0.5"
    assert os.getxattr(ws, "user.effective.retries") == b"5"
    assert os.getxattr(m.path, "user.effective.providers") == b"openai,azure"
    assert os.getxattr(m.path, "user.effective.max_request_usd") == b"1"
    # budgets are not composed into one value (see .usage)
    assert os.getxattr(ws, "user.policy.budget_usd") == b"10"
    assert xattr_errno(os.getxattr, ws, "user.effective.budget_usd") == errno.ENODATA
    assert xattr_errno(os.getxattr, ws, "user.effective.budget_period") == errno.ENODATA
    # the nearest setting wins over the root's
    os.setxattr(ws, "user.policy.retries", b"0")
    assert os.getxattr(ws, "user.effective.retries") == b"0"
    assert os.getxattr(d, "user.effective.retries") == b"5"
    # read-only, and not listed with the keys set here
    for where in (ws, d):
        assert xattr_errno(os.setxattr, where, "user.effective.retries", b"1") in \
            (errno.EPERM, errno.EACCES)
    r = sh("setfattr -n user.effective.retries -v 1 %s" % ws, check=False)
    assert r.returncode != 0, r
    assert os.getxattr(ws, "user.effective.retries") == b"0"
    assert os.listxattr(ws) == ["user.policy.max_request_usd", "user.policy.budget_usd",
                                "user.policy.retries"]


# 9. durability

def test_policy_survives_kill_9(mount_factory):
    m = mount_factory()
    d = m.model()
    ws = os.path.join(d, "ws")
    os.mkdir(ws)
    sh("setfattr -n user.policy.residency -v eu %s" % ws)
    sh("setfattr -n user.policy.max_request_usd -v 0.25 %s" % ws)
    expected = b'{\n  "residency": ["eu"],\n  "max_request_usd": 0.25\n}\n'
    assert read_bytes(policy_file(ws)) == expected
    m.kill9()
    m.start()
    assert os.getxattr(ws, "user.policy.residency") == b"eu"
    assert os.getxattr(ws, "user.policy.max_request_usd") == b"0.25"
    assert os.listxattr(ws) == ["user.policy.residency", "user.policy.max_request_usd"]
    assert read_bytes(policy_file(ws)) == expected


# 10. names not in the config

def test_policy_may_name_clouds_not_configured(mount_factory):
    m = mount_factory()
    d = m.model()
    r = sh("setfattr -n user.policy.providers -v nosuchcloud %s" % d, check=False)
    assert r.returncode == 0, r
    assert os.getxattr(d, "user.policy.providers") == b"nosuchcloud"
    m.wait_log("nosuchcloud", timeout=5)


# 11. .policy at every level

def test_policy_file_at_root_cloud_and_region_levels(mount_factory):
    m = mount_factory()
    cloud = os.path.join(m.path, "openai")
    region = os.path.join(cloud, "us")
    assert ".policy" not in sh("ls -a %s" % cloud).stdout.decode().split()
    sh("setfattr -n user.policy.residency -v us %s" % cloud)
    sh("setfattr -n user.policy.max_request_usd -v 2 %s" % region)
    sh("setfattr -n user.policy.retries -v 4 %s" % m.path)
    assert ".policy" in sh("ls -a %s" % cloud).stdout.decode().split()
    assert ".policy" in sh("ls -a %s" % region).stdout.decode().split()
    assert ".policy" in sh("ls -a %s" % m.path).stdout.decode().split()
    assert read_bytes(policy_file(cloud)) == b'{\n  "residency": ["us"]\n}\n'
    assert read_bytes(policy_file(region)) == b'{\n  "max_request_usd": 2\n}\n'
    assert read_bytes(policy_file(m.path)) == b'{\n  "retries": 4\n}\n'
    assert os.getxattr(cloud, "user.policy.residency") == b"us"
    assert os.getxattr(region, "user.policy.max_request_usd") == b"2"
    assert os.getxattr(m.path, "user.policy.retries") == b"4"


# 12. .policy is not renamed, nor made a directory

def test_policy_file_cannot_be_renamed_or_made_a_directory(mount_factory):
    m = mount_factory()
    d = m.model()
    ws = os.path.join(d, "ws")
    os.mkdir(ws)
    os.setxattr(d, "user.policy.retries", b"3")
    before = read_bytes(policy_file(d))
    with open(os.path.join(d, "notes.txt"), "wb") as f:
        f.write(b'{"retries": 1}\n')
    # onto .policy
    assert xattr_errno(os.rename, os.path.join(d, "notes.txt"), policy_file(d)) == errno.EPERM
    r = sh("cd %s && mv notes.txt .policy" % d, check=False)
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr, r
    assert os.path.exists(os.path.join(d, "notes.txt"))
    assert read_bytes(policy_file(d)) == before
    assert os.getxattr(d, "user.policy.retries") == b"3"
    # from .policy
    assert xattr_errno(os.rename, policy_file(d), os.path.join(d, "y")) == errno.EPERM
    r = sh("cd %s && mv .policy y" % d, check=False)
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr, r
    assert not os.path.exists(os.path.join(d, "y"))
    assert read_bytes(policy_file(d)) == before
    assert os.getxattr(d, "user.policy.retries") == b"3"
    # a directory named .policy, where there is no policy
    assert xattr_errno(os.mkdir, policy_file(ws)) == errno.EPERM
    r = sh("mkdir %s/.policy" % ws, check=False)
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr, r
    assert not os.path.exists(policy_file(ws))


# bad input: a clear errno, never a half-applied policy

def test_bad_input_gets_a_clear_errno_and_changes_nothing(mount_factory):
    m = mount_factory()
    d = m.model()
    os.setxattr(d, "user.policy.retries", b"3")
    before = read_bytes(policy_file(d))
    # a 10 MB .policy: refused once it passes 64 KiB, and not applied
    fd = os.open(d + "/.policy", os.O_WRONLY | os.O_TRUNC)
    with pytest.raises(OSError) as e:
        for _ in range(80):
            os.write(fd, b" " * 131072)
    assert e.value.errno == errno.EFBIG
    with pytest.raises(OSError) as e:
        os.close(fd)  # the close that would apply it says so too
    assert e.value.errno == errno.EFBIG
    assert read_bytes(policy_file(d)) == before
    # a value with a NUL byte, a value too large for the kernel
    assert xattr_errno(os.setxattr, d, "user.policy.residency", b"eu\0us") == errno.EINVAL
    assert xattr_errno(os.setxattr, d, "user.policy.system", b"x" * 100000) == errno.E2BIG
    # a policy key on a file, an xattr name that is no policy key
    with open(d + "/notes.txt", "w") as f:
        f.write("x")
    assert xattr_errno(os.setxattr, d + "/notes.txt", "user.policy.retries", b"1") == \
        errno.ENOTSUP
    assert xattr_errno(os.setxattr, d, "user.colour", b"blue") == errno.ENOTSUP
    assert xattr_errno(os.getxattr, d, "user.colour") == errno.ENODATA
    assert os.listxattr(d) == ["user.policy.retries"]
    assert read_bytes(policy_file(d)) == before
    # negative numbers and wrong types, as xattrs and in .policy
    for key, value in (("budget_usd", b"-5"), ("max_request_usd", b"-0.01"),
                       ("max_output_tokens", b"-1"), ("budget_usd", b"fifty"),
                       ("retries", b"2.5"), ("budget_period", b"week")):
        assert xattr_errno(os.setxattr, d, "user.policy." + key, value) == errno.EINVAL, key
    for bad in (b'{"budget_usd": -5}', b'{"budget_usd": "50"}', b'{"max_output_tokens": 0}',
                b'{"providers": "aws,azure", "residency": 5}', b'{"max_request_usd": null}',
                b'{"fallback": "yes"}', b'{"temperature": [1]}'):
        assert write_policy(policy_file(d), bad) == errno.EINVAL, bad
    assert os.listxattr(d) == ["user.policy.retries"]
    assert read_bytes(policy_file(d)) == before
    # each refusal says why in the log
    m.wait_log("budget_usd must be")
