"""The tree (SPEC §4): structure from the config, EPERM on changing it,
1777 model directories, ordinary files, workspaces, ownership."""
import errno
import os
import stat

import pytest

from conftest import NOBODY, sh


def test_structure_comes_from_the_config(mnt):
    # and each directory's .usage, the root's .metrics (SPEC §4), made by
    # the daemon
    assert sorted(os.listdir(mnt.path)) == [".metrics", ".usage", "any", "local", "openai"]
    assert sorted(os.listdir(mnt.path + "/any")) == [".usage", "local", "us"]
    assert sorted(os.listdir(mnt.path + "/any/us")) == [".usage", "gpt-4o", "gpt-4o-mini"]
    assert sorted(os.listdir(mnt.path + "/openai")) == [".usage", "us"]
    assert sorted(os.listdir(mnt.path + "/openai/us")) == [".usage", "gpt-4o", "gpt-4o-mini"]
    assert os.listdir(mnt.model()) == [".usage"]
    with pytest.raises(FileNotFoundError):
        os.stat(mnt.path + "/azure")
    with pytest.raises(FileNotFoundError):
        os.stat(mnt.path + "/openai/eu")


def test_model_directories_are_sticky_and_open_to_all(mnt):
    st = os.stat(mnt.model())
    assert stat.S_IMODE(st.st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(mnt.path + "/openai").st_mode) == 0o755


def test_structure_cannot_be_changed(mnt):
    cases = [
        (os.mkdir, (mnt.path + "/newcloud",)),
        (os.mkdir, (mnt.path + "/openai/newregion",)),
        (os.mkdir, (mnt.path + "/openai/us/newmodel",)),
        (os.rmdir, (mnt.model(),)),
        (os.rmdir, (mnt.path + "/openai",)),
        (os.rename, (mnt.model(), mnt.path + "/openai/us/renamed")),
        (os.rename, (mnt.path + "/local", mnt.path + "/local2")),
    ]
    for fn, args in cases:
        with pytest.raises(OSError) as e:
            fn(*args)
        assert e.value.errno == errno.EPERM, (fn.__name__, args, e.value)
    with pytest.raises(OSError) as e:
        open(mnt.path + "/openai/us/notes.txt", "w")
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        open(mnt.path + "/notes.txt", "w")
    assert e.value.errno == errno.EPERM


def test_ordinary_files_are_stored_as_written(mnt):
    d = mnt.model()
    data = os.urandom(300000)
    with open(d + "/blob.bin", "wb") as f:
        f.write(data)
    assert open(d + "/blob.bin", "rb").read() == data
    sh("echo note > %s/notes.txt && mv %s/notes.txt %s/notes2.txt" % (d, d, d))
    assert open(d + "/notes2.txt").read() == "note\n"
    with open(d + "/notes2.txt", "r+") as f:
        f.seek(2)
        f.write("X")
    assert open(d + "/notes2.txt").read() == "noXe\n"
    os.truncate(d + "/notes2.txt", 2)
    assert open(d + "/notes2.txt").read() == "no"
    os.unlink(d + "/notes2.txt")
    assert not os.path.exists(d + "/notes2.txt")
    assert sorted(os.listdir(d)) == [".usage", "blob.bin"]


def test_editor_style_save_and_rename_between_workspaces(mnt):
    d = mnt.model()
    sh("mkdir %s/ws1 %s/ws2 && echo v1 > %s/ws1/doc.txt" % (d, d, d))
    sh("echo v2 > %s/ws1/.doc.txt.swp && mv %s/ws1/.doc.txt.swp %s/ws1/doc.txt" % (d, d, d))
    sh("mv %s/ws1/doc.txt %s/ws2/" % (d, d))
    assert open(d + "/ws2/doc.txt").read() == "v2\n"
    with pytest.raises(OSError) as e:
        os.rmdir(d + "/ws2")
    assert e.value.errno == errno.ENOTEMPTY
    sh("rm -r %s/ws1 %s/ws2" % (d, d))
    assert os.listdir(d) == [".usage"]


def test_files_belong_to_their_creator_and_sticky_protects_them(mnt):
    d = mnt.model()
    sh("umask 022; echo mine > %s/nobody.txt; mkdir %s/nobody-ws" % (d, d), user=NOBODY)
    st = os.stat(d + "/nobody.txt")
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    assert stat.S_IMODE(st.st_mode) == 0o644
    assert os.stat(d + "/nobody-ws").st_uid == NOBODY
    sh("echo root > %s/root.txt" % d)
    r = sh("rm -f %s/root.txt" % d, user=NOBODY, check=False)
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    r = sh("echo x >> %s/root.txt" % d, user=NOBODY, check=False)
    assert b"Permission denied" in r.stderr


def test_modes_are_the_creators_umask_never_the_daemons(mount_factory):
    """A daemon started under umask 077 does not narrow what users make:
    umask 002 gives a group its write bit, as on a disk."""
    old = os.umask(0o077)
    try:
        m = mount_factory()
    finally:
        os.umask(old)
    d = m.model()
    sh("umask 002; echo a > %s/shared.txt; mkdir %s/shared-ws; echo q > %s/shared.prompt; "
       "cat %s/shared.response >/dev/null" % (d, d, d, d), user=NOBODY)
    sh("umask 027; echo a > %s/group.txt; mkdir %s/group-ws" % (d, d), user=NOBODY)
    modes = {name: stat.S_IMODE(os.stat(os.path.join(d, name)).st_mode)
             for name in ("shared.txt", "shared-ws", "shared.prompt", "shared.response",
                          "shared.meta", "group.txt", "group-ws")}
    assert modes == {"shared.txt": 0o664, "shared-ws": 0o775, "shared.prompt": 0o664,
                     "shared.response": 0o444, "shared.meta": 0o444,
                     "group.txt": 0o640, "group-ws": 0o750}
    # the daemon's own files stay its own
    for name in ("audit.jsonl", "journal", "staging"):
        assert stat.S_IMODE(os.stat(os.path.join(m.state, name)).st_mode) & 0o077 == 0


def test_a_set_group_id_directory_gives_its_group_as_on_a_disk(mnt):
    """A team's workspace (chmod g+s, its group) keeps its group on what
    its members make, prompts and their answers included; elsewhere the
    creator's group."""
    d = mnt.model()
    os.mkdir(d + "/team")
    os.mkdir(d + "/plain")
    os.chown(d + "/team", 0, 100)
    os.chmod(d + "/team", 0o2777)
    os.chmod(d + "/plain", 0o777)
    sh("umask 002; echo a > %s/team/f.txt; mkdir %s/team/sub; echo b > %s/team/sub/g.txt; "
       "echo q > %s/team/p.prompt; cat %s/team/p.response >/dev/null; echo c > %s/plain/h.txt"
       % (d, d, d, d, d, d), user=NOBODY)
    owners = {name: (os.stat(os.path.join(d, name)).st_uid, os.stat(os.path.join(d, name)).st_gid)
              for name in ("team/f.txt", "team/sub", "team/sub/g.txt", "team/p.prompt",
                           "team/p.response", "team/p.meta", "plain/h.txt")}
    assert owners == {"team/f.txt": (NOBODY, 100), "team/sub": (NOBODY, 100),
                      "team/sub/g.txt": (NOBODY, 100), "team/p.prompt": (NOBODY, 100),
                      "team/p.response": (NOBODY, 100), "team/p.meta": (NOBODY, 100),
                      "plain/h.txt": (NOBODY, NOBODY)}
    # a directory made in it is set-group-ID too, as mkdir makes it on a disk
    assert os.stat(d + "/team/sub").st_mode & stat.S_ISGID


def test_job_files_take_the_prompt_owner_and_read_bits(mnt):
    d = mnt.model()
    sh("umask 077; echo secret question > %s/priv.prompt; cat %s/priv.response" % (d, d),
       user=NOBODY)
    for name in ("priv.response", "priv.meta"):
        st = os.stat(d + "/" + name)
        assert st.st_uid == NOBODY
        assert stat.S_IMODE(st.st_mode) == 0o400
    # other users cannot read it (root can; test as a third uid)
    r = sh("cat %s/priv.response" % d, user=NOBODY - 1, check=False)
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    assert sh("cat %s/priv.meta" % d, user=NOBODY).stdout.startswith(b'{"status":')


def test_admin_chmod_of_structure_is_kept_across_remounts(mount_factory, tmp_path):
    m = mount_factory()
    os.chmod(m.model(), 0o1770)
    os.chown(m.model(), 0, 100)
    assert m.unmount() == 0
    m.start()
    st = os.stat(m.model())
    assert stat.S_IMODE(st.st_mode) == 0o1770 and st.st_gid == 100
    r = sh("ls %s" % m.model(), user=NOBODY, check=False)
    assert r.returncode != 0


def test_statfs_and_df_type(mnt):
    r = sh("df -T %s | tail -1" % mnt.path)
    assert b"fuse.promptfs" in r.stdout
    os.statvfs(mnt.model())
