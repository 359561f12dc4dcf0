"""A job's files are one unit, and its prompt is its question: removing any
generated file removes them all (and cancels the job if it runs), emptying
or truncating the prompt supersedes its job, and no restart brings back
what was removed. Refusals of a rename use errnos mv prints truthfully."""
import errno
import json
import os
import stat
import subprocess

import pytest

from conftest import NOBODY, default_config, read_all, read_meta, sh, wait_finished, wait_for


def write(path, data):
    with open(path, "w") as f:
        f.write(data)


def generated(d, base):
    return sorted(n for n in os.listdir(d)
                  if n.startswith(base + ".") and not n.endswith(".prompt"))


def test_a_finished_job_without_its_meta_never_reads_as_an_answer(mount_factory, fake):
    m = mount_factory()
    d = m.model()
    for base in ("a", "b"):
        write("%s/%s.prompt" % (d, base), "unit %s %d" % (base, id(m)))
        wait_finished(d, base)
    # a finished job's files go one by one (rm -r works in any order), but
    # an answer whose .meta is gone is no longer a clean end of file
    os.unlink(d + "/a.meta")
    assert generated(d, "a") == ["a.response"] and os.path.exists(d + "/a.prompt")
    assert read_all(d + "/a.response")[1] == errno.EIO
    r = sh("cat %s/a.response" % d, check=False)
    assert r.returncode == 1
    os.unlink(d + "/b.response")
    assert generated(d, "b") == ["b.meta"]
    # not brought back by a crash before the next checkpoint, nor resumed
    m.kill9()
    m.start()
    assert generated(d, "a") == ["a.response"] and generated(d, "b") == ["b.meta"]
    assert read_all(d + "/a.response")[1] == errno.EIO
    assert fake.requests_for("unit a %d" % id(m)) == 1
    # and a workspace of finished jobs goes with rm -r, long after
    os.mkdir(d + "/ws")
    for i in range(3):
        write("%s/ws/q%d.prompt" % (d, i), "gone %d" % i)
        wait_finished(d + "/ws", "q%d" % i)
    sh("rm -r %s/ws" % d)
    assert not os.path.exists(d + "/ws")


def test_removing_a_running_jobs_response_cancels_it(mount_factory, fake):
    m = mount_factory()
    d = m.model()
    gate = "rmresp%d" % id(m)
    text = "[[fault:gate name=%s]] running" % gate
    write(d + "/r.prompt", text)
    assert wait_for(lambda: fake.requests_for(text) == 1)  # held by the fake
    assert read_meta(d + "/r.meta")["status"] == "running"
    # a live job goes with all its files: its .meta would say running
    os.unlink(d + "/r.response")
    assert generated(d, "r") == []
    m.kill9()
    m.start()
    fake.open_gate(gate)
    # never resumed: one request only, and no files came back
    assert not wait_for(lambda: generated(d, "r") != [], 1)
    assert fake.requests_for(text) == 1


def test_emptying_or_truncating_a_prompt_supersedes_its_job(mount_factory, fake):
    m = mount_factory()
    d = m.model()
    write(d + "/e.prompt", "to be emptied")
    wait_finished(d, "e")
    sh(": > %s/e.prompt" % d)
    assert generated(d, "e") == []
    write(d + "/t.prompt", "to be truncated")
    wait_finished(d, "t")
    # by path: the old job goes, and nothing is submitted
    os.truncate(d + "/t.prompt", 5)
    assert generated(d, "t") == [] and open(d + "/t.prompt").read() == "to be"
    # through a descriptor (truncate(1) opens it): its close submits
    sh("truncate -s 3 %s/t.prompt" % d)
    wait_finished(d, "t")
    assert open(d + "/t.response").read() == "echo: to "
    # an empty file moved over a running job cancels it
    gate = "mvempty%d" % id(m)
    text = "[[fault:gate name=%s]] long job" % gate
    write(d + "/run2.prompt", text)
    write(d + "/empty.txt", "")
    os.rename(d + "/empty.txt", d + "/run2.prompt")
    assert generated(d, "run2") == []
    fake.open_gate(gate)
    assert not wait_for(lambda: generated(d, "run2") != [], 1)


def consistent(d, base):
    """BASE's answer is never a clean end of file unless its .meta says
    done and it answers the prompt as it is now."""
    files = generated(d, base)
    if base + ".response" not in files:
        return True
    if base + ".meta" not in files:
        return read_all("%s/%s.response" % (d, base))[1] == errno.EIO
    wait_finished(d, base)
    prompt = open("%s/%s.prompt" % (d, base)).read()
    return (read_meta("%s/%s.meta" % (d, base))["status"] == "done"
            and open("%s/%s.response" % (d, base)).read() == "echo: " + prompt
            and not os.path.exists("%s/%s.error" % (d, base)))


def test_tar_over_a_workspace_leaves_consistent_jobs(mount_factory, fake, tmp_path):
    m = mount_factory()
    d = m.model()
    os.mkdir(d + "/ws")
    for i in range(3):
        write("%s/ws/q%d.prompt" % (d, i), "tar %d" % i)
        wait_finished(d + "/ws", "q%d" % i)
    archive = str(tmp_path / "ws.tar")
    sh("tar cf %s -C %s ws" % (archive, d))
    # tar writes each prompt again (a new job) and removes the files it
    # finds in the way of the archive's, whose creation is refused: what
    # is left never reads as an answer it is not, across a crash too
    r = sh("tar xf %s -C %s" % (archive, d), check=False)
    assert r.returncode == 2 and b"Permission denied" in r.stderr
    assert all(consistent(d + "/ws", "q%d" % i) for i in range(3))
    m.kill9()
    m.start()
    assert all(consistent(d + "/ws", "q%d" % i) for i in range(3))
    # restoring a workspace: the prompts only, and each is asked again
    sh("tar xf %s -C %s --exclude='*.response' --exclude='*.meta' --exclude='*.error'"
       % (archive, d))
    for i in range(3):
        wait_finished(d + "/ws", "q%d" % i)
        assert read_meta("%s/ws/q%d.meta" % (d, i))["status"] == "done"
        assert open("%s/ws/q%d.response" % (d, i)).read() == "echo: tar %d" % i


def test_rename_refusals_use_errnos_mv_prints_truthfully(mount_factory, fake):
    m = mount_factory()
    d = m.model()
    write(d + "/j.tmp", json.dumps({"messages": [{"role": "user", "content": 5}]}))
    with pytest.raises(OSError) as e:
        os.rename(d + "/j.tmp", d + "/j.prompt")
    assert e.value.errno == errno.EBADMSG
    assert os.path.exists(d + "/j.tmp") and not os.path.exists(d + "/j.prompt")
    assert "content" in open(d + "/j.error").read()
    r = subprocess.run(["mv", d + "/j.tmp", d + "/j.prompt"], capture_output=True)
    assert r.returncode == 1 and b"Bad message" in r.stderr
    assert b"subdirectory" not in r.stderr
    # a budget without room: EDQUOT, and the file stays where it was
    os.setxattr(d, "user.policy.max_request_usd", b"0.0011")
    os.setxattr(d, "user.policy.max_output_tokens", b"100")
    write(d + "/long.tmp", "x" * 1000)
    r = subprocess.run(["mv", d + "/long.tmp", d + "/long.prompt"], capture_output=True)
    assert r.returncode == 1 and b"Disk quota exceeded" in r.stderr
    assert os.path.exists(d + "/long.tmp") and not os.path.exists(d + "/long.prompt")
    assert "max_request_usd 0.0011" in open(d + "/long.error").read()
    assert fake.requests_for("x" * 1000) == 0


def test_a_group_redirection_submits_once_the_whole_text(mount_factory, fake, tmp_path):
    m = mount_factory()
    d = m.model()
    report = tmp_path / "report.txt"
    report.write_text("the report %d\n" % id(m))
    cases = {
        "a": ('{ echo "Translate:"; /bin/true; echo "into French"; }',
              "Translate:\ninto French\n"),
        "b": ('{ echo "Summarize:"; cat %s; }' % report,
              "Summarize:\nthe report %d\n" % id(m)),
        "c": ('{ cat %s; echo "Summarize the above"; }' % report,
              "the report %d\nSummarize the above\n" % id(m)),
    }
    for base, (group, text) in cases.items():
        sh("%s > %s/%s.prompt" % (group, d, base))
        wait_finished(d, base)
        assert open("%s/%s.response" % (d, base)).read() == "echo: " + text
        assert fake.requests_for(text) == 1
    # the pieces were never sent on their own
    assert fake.requests_for("Translate:\n") == 0
    assert fake.requests_for("the report %d\n" % id(m)) == 0
    # a parent that closes its copy first: the child's close submits
    sh("python3 -c 'import subprocess; f = open(\"%s/p.prompt\", \"w\"); "
       "p = subprocess.Popen([\"cat\", \"%s\"], stdout=f); f.close(); p.wait()'" % (d, report))
    wait_finished(d, "p")
    assert open(d + "/p.response").read() == "echo: the report %d\n" % id(m)
    # a policy written by a group is applied once, whole
    (tmp_path / "retries.txt").write_text('"retries": 4\n')
    sh("{ echo '{'; cat %s; echo '}'; } > %s/.policy" % (tmp_path / "retries.txt", d))
    assert os.getxattr(d, "user.policy.retries") == b"4"


def test_job_files_follow_their_prompt_and_nobody_squats_their_names(mount_factory, fake):
    m = mount_factory()
    d = m.model()
    write(d + "/x.prompt", "private")
    wait_finished(d, "x")
    os.chmod(d + "/x.prompt", 0o600)
    for suffix in (".response", ".meta"):
        assert stat.S_IMODE(os.stat(d + "/x" + suffix).st_mode) == 0o400
    r = sh("cat %s/x.response" % d, check=False, user=NOBODY)
    assert r.returncode == 1 and b"Permission denied" in r.stderr
    os.chown(d + "/x.prompt", NOBODY, NOBODY)
    assert os.stat(d + "/x.meta").st_uid == NOBODY
    assert sh("cat %s/x.response" % d, user=NOBODY).stdout == b"echo: private"
    # a job still running writes its files with the new mode when it ends
    gate = "follow%d" % id(m)
    write(d + "/y.prompt", "[[fault:gate name=%s]] later" % gate)
    os.chmod(d + "/y.prompt", 0o640)
    assert stat.S_IMODE(os.stat(d + "/y.meta").st_mode) == 0o440
    fake.open_gate(gate)
    wait_finished(d, "y")
    for suffix in (".response", ".meta"):
        assert stat.S_IMODE(os.stat(d + "/y" + suffix).st_mode) == 0o440
    # another uid cannot take a job's generated name, even as a directory
    os.chmod(d, 0o1777)
    for call in ("mkdir %s/u1next.response" % d, "mkdir %s/u1next.meta" % d,
                 "mkdir %s/tmpdir && mv %s/tmpdir %s/u1next.error" % (d, d, d)):
        r = sh(call, check=False, user=NOBODY)
        assert r.returncode == 1 and b"Permission denied" in r.stderr, call
    # a name whose .response would not fit in 255 bytes
    with pytest.raises(OSError) as e:
        os.open("%s/%s.prompt" % (d, "n" * 247), os.O_WRONLY | os.O_CREAT, 0o644)
    assert e.value.errno == errno.ENAMETOOLONG
    fd = os.open("%s/%s.prompt" % (d, "n" * 246), os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)


def test_a_refused_key_says_where_it_came_from_and_what_takes_a_new_one(mount_factory, fake):
    config = default_config(fake.url)
    config["clouds"]["openai"]["auth"] = {"api_key_env": "PFS_WRONG_KEY"}
    m = mount_factory(config=config, env={"PFS_WRONG_KEY": "sk-wrong-key"})
    d = m.model()
    write(d + "/k.prompt", "with a wrong key")
    wait_finished(d, "k")
    lines = open(d + "/k.error").read().splitlines()
    assert lines[1] == ("The credentials of cloud openai come from api_key_env "
                        "PFS_WRONG_KEY; a new key in the environment needs a restart "
                        "of the daemon.")
    assert "sk-wrong-key" not in open(d + "/k.error").read()


def test_a_jobs_end_is_one_line_in_the_log_and_a_failure_in_meta(mount_factory, fake):
    m = mount_factory(options=("log_level=debug",))
    d = m.model()
    write(d + "/ok.prompt", "logged")
    wait_finished(d, "ok")
    m.wait_log("job /openai/us/gpt-4o/ok.prompt uid 0 done: route openai/us/gpt-4o, "
               "1 attempt(s) [ok] in ")
    write(d + "/bad.prompt", "no [[fault:status code=400]]")
    meta = wait_finished(d, "bad")
    assert meta["status"] == "failed" and meta["route"] == "openai/us/gpt-4o"
    assert meta["error"] == open(d + "/bad.error").readline().rstrip("\n")
    m.wait_log("job /openai/us/gpt-4o/bad.prompt uid 0 failed: route openai/us/gpt-4o, "
               "1 attempt(s) [http_400] in ")
    # log_level=debug adds each HTTP status
    m.wait_log("job bad.prompt: openai/us/gpt-4o answered HTTP 400 (http_400) in ")
    assert "no [[fault" not in open(m.log).read()  # never the prompt's text
