"""Workspaces moved across deployments: a directory's jobs run on the model
it is under when they are submitted, wherever it was made; a job running
while its workspace moves finishes where it began, and its files move with
the directory; after a remount a path means the same deployment."""
import errno
import os
import subprocess

import pytest

from conftest import read_all, read_meta, sh, wait_for, wait_finished

GPT = ("openai", "us", "gpt-4o")
MINI = ("openai", "us", "gpt-4o-mini")
LLAMA = ("local", "localhost", "llama3.2")

# The fake cloud answers 400 when the request names the wrong model (its
# faults filter on the model the request asked for, so the route in .meta
# alone, which the daemon writes, is not the only witness), and a first 503
# when it names the right one: attempts ["http_503", "ok"] show the fake saw
# the expected model.
def routed_to(model, others):
    wrong = " ".join("[[fault:status code=400 model=%s message=ran_on_%s]]" % (m, m)
                     for m in others)
    return "[[fault:status code=503 times=1 retry_after_ms=20 model=%s]] %s" % (model, wrong)


def write_prompt(path, text):
    sh("echo '%s' > %s" % (text, path))


def assert_ran_on(d, name, text, route):
    data, err = read_all(os.path.join(d, name + ".response"))
    meta = read_meta(os.path.join(d, name + ".meta"))
    error = ""
    if os.path.exists(os.path.join(d, name + ".error")):
        error = open(os.path.join(d, name + ".error")).read()
    assert (data, err) == (("echo: %s\n" % text).encode(), 0), (meta, error)
    assert meta["status"] == "done"
    assert meta["route"] == "/".join(route)
    assert [a["outcome"] for a in meta["attempts"]] == ["http_503", "ok"]
    assert {a["target"] for a in meta["attempts"]} == {"/".join(route)}


def test_workspace_moved_to_another_model_runs_there(mount_factory):
    m = mount_factory()
    sh("mkdir %s/ws" % m.model(*GPT))
    # the sequence, with real tools
    sh("mv %s/ws %s/" % (m.model(*GPT), m.model(*LLAMA)))
    d = m.model(*LLAMA) + "/ws"
    text = "hi " + routed_to("llama3.2", ["gpt-4o"])
    write_prompt(d + "/a.prompt", text)
    assert_ran_on(d, "a", text, LLAMA)
    assert os.listdir(m.model(*GPT)) == [".usage"]

    # the same path after a remount means the same deployment
    assert m.unmount() == 0
    m.start()
    text2 = "again " + routed_to("llama3.2", ["gpt-4o"])
    write_prompt(d + "/b.prompt", text2)
    assert_ran_on(d, "b", text2, LLAMA)
    assert read_meta(d + "/a.meta")["route"] == "local/localhost/llama3.2"


def test_nested_workspaces_follow_every_move(mount_factory):
    m = mount_factory()
    g = m.model(*GPT)
    sh("mkdir -p %s/a/b/c" % g)
    first = "before the move " + routed_to("gpt-4o", ["llama3.2", "gpt-4o-mini"])
    write_prompt(g + "/a/b/c/q1.prompt", first)
    assert_ran_on(g + "/a/b/c", "q1", first, GPT)

    # the top of the chain moves: every level below runs on its new model
    sh("mv %s/a %s/a" % (g, m.model(*LLAMA)))
    a = m.model(*LLAMA) + "/a"
    deep = "three deep " + routed_to("llama3.2", ["gpt-4o", "gpt-4o-mini"])
    mid = "two deep " + routed_to("llama3.2", ["gpt-4o", "gpt-4o-mini"])
    write_prompt(a + "/b/c/q2.prompt", deep)
    write_prompt(a + "/b/q3.prompt", mid)
    assert_ran_on(a + "/b/c", "q2", deep, LLAMA)
    assert_ran_on(a + "/b", "q3", mid, LLAMA)
    # a finished job's files moved with it and still tell where it ran
    assert_ran_on(a + "/b/c", "q1", first, GPT)

    # a middle level moves on, out of the moved tree, renamed on the way
    sh("mv %s/b %s/b2" % (a, m.model(*MINI)))
    b2 = m.model(*MINI) + "/b2"
    mini = "in mini " + routed_to("gpt-4o-mini", ["gpt-4o", "llama3.2"])
    write_prompt(b2 + "/c/q4.prompt", mini)
    assert_ran_on(b2 + "/c", "q4", mini, MINI)
    assert os.listdir(a) == []

    # onto an existing empty directory (rename(2) replaces it)
    os.mkdir(g + "/empty")
    os.rename(b2 + "/c", g + "/empty")
    back = "back on gpt-4o " + routed_to("gpt-4o", ["llama3.2", "gpt-4o-mini"])
    write_prompt(g + "/empty/q5.prompt", back)
    assert_ran_on(g + "/empty", "q5", back, GPT)
    assert sorted(os.listdir(g)) == [".usage", "empty"]
    assert sorted(os.listdir(b2)) == ["q3.meta", "q3.prompt", "q3.response"]

    # a new directory made where an old one was removed is its own
    sh("rm -r %s && mkdir %s" % (b2, b2))
    fresh = "fresh " + routed_to("gpt-4o-mini", ["gpt-4o", "llama3.2"])
    write_prompt(b2 + "/q6.prompt", fresh)
    assert_ran_on(b2, "q6", fresh, MINI)


def test_workspace_moved_while_its_job_runs(mount_factory):
    m = mount_factory()
    old = m.model(*GPT) + "/ws"
    new = m.model(*LLAMA) + "/ws2"
    os.mkdir(old)
    text = "slow answer " + routed_to("gpt-4o", ["llama3.2"]) + \
        " [[fault:stall after=6 seconds=2]]"
    write_prompt(old + "/s.prompt", text)
    reader = subprocess.Popen(["cat", old + "/s.response"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    # running, with its first bytes written, when the directory moves
    assert wait_for(lambda: os.stat(old + "/s.response").st_size > 0, timeout=10)
    assert read_meta(old + "/s.meta")["status"] == "running"
    sh("mv %s %s" % (old, new))
    assert not os.path.exists(old)
    assert read_meta(new + "/s.meta")["status"] == "running"

    # it finishes on the deployment it began on, at the new path
    meta = wait_finished(new, "s")
    assert meta["status"] == "done", meta
    assert_ran_on(new, "s", text, GPT)
    out, _ = reader.communicate(timeout=20)
    assert (out, reader.returncode) == (("echo: %s\n" % text).encode(), 0)
    assert sorted(os.listdir(new)) == ["s.meta", "s.prompt", "s.response"]

    # the next job in the moved directory runs where it is now
    nxt = "next " + routed_to("llama3.2", ["gpt-4o"])
    write_prompt(new + "/t.prompt", nxt)
    assert_ran_on(new, "t", nxt, LLAMA)

    # and so after a remount
    assert m.unmount() == 0
    m.start()
    later = "later " + routed_to("llama3.2", ["gpt-4o"])
    write_prompt(new + "/u.prompt", later)
    assert_ran_on(new, "u", later, LLAMA)
    assert_ran_on(new, "s", text, GPT)


def test_job_resumed_after_a_move_runs_where_its_directory_now_is(mount_factory):
    m = mount_factory()
    old = m.model(*GPT) + "/ws"
    new = m.model(*LLAMA) + "/ws"
    os.mkdir(old)
    # 503 for gpt-4o until the unmount: the job is retrying there, still
    # unfinished, when its directory moves and the daemon stops
    text = "resume me [[fault:status code=503 retry_after=2 model=gpt-4o]] " + \
        routed_to("llama3.2", [])
    write_prompt(old + "/r.prompt", text)
    assert wait_for(lambda: read_meta(old + "/r.meta").get("attempts"), timeout=10)
    assert read_meta(old + "/r.meta")["attempts"][0]["target"] == "openai/us/gpt-4o"
    sh("mv %s %s" % (old, new))
    assert m.unmount() == 0
    assert read_meta(os.path.join(m.state, "tree/local/localhost/llama3.2/ws/r.meta"))[
        "status"] in ("queued", "running")
    m.start()
    meta = wait_finished(new, "r")
    assert meta["status"] == "done", meta
    assert meta["route"] == "local/localhost/llama3.2"
    assert read_all(new + "/r.response") == (("echo: %s\n" % text).encode(), 0)


def test_directory_renames_keep_their_errors(mnt):
    g = mnt.model(*GPT)
    sh("mkdir -p %s/x/y %s/full && touch %s/full/f" % (g, g, g))
    with pytest.raises(OSError) as e:
        os.rename(g + "/x", g + "/x/y/z")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        os.rename(g + "/x", g + "/full")
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as e:
        os.rename(g + "/x", mnt.path + "/openai/us/x")
    assert e.value.errno == errno.EPERM
    # the refused moves changed nothing: x still runs on gpt-4o
    text = "still here " + routed_to("gpt-4o", ["llama3.2"])
    write_prompt(g + "/x/y/p.prompt", text)
    assert_ran_on(g + "/x/y", "p", text, GPT)
