"""The journal in state_dir: what a crash leaves is made whole again from it
at the next mount, jobs are found where their directory went, and a mount
reads the unfinished jobs only."""
import os

from conftest import read_all, read_meta, sh, wait_finished, wait_for


def tree(m, *parts):
    return os.path.join(m.state, "tree", *parts)


def test_finished_job_files_come_back_from_the_journal(mount_factory):
    m = mount_factory()
    d = m.model()
    # after the mount's own checkpoint: one later would make the files
    # durable and let their records go, as it should
    m.wait_log("journal: checkpoint done")
    sh("echo 'kept answer' > %s/k.prompt" % d)
    assert open(d + "/k.response").read() == "echo: kept answer\n"
    meta = open(d + "/k.meta").read()
    assert read_meta(d + "/k.meta")["status"] == "done"
    m.kill9()
    # what a power cut may leave of files written without a flush of
    # their own: a .meta gone, a short answer, a stale .error
    base = tree(m, "openai", "us", "gpt-4o")
    os.unlink(base + "/k.meta")
    with open(base + "/k.response", "w") as f:
        f.write("echo: ke")
    with open(base + "/k.error", "w") as f:
        f.write("stale\n")
    m.start()
    assert open(d + "/k.meta").read() == meta
    assert open(d + "/k.response").read() == "echo: kept answer\n"
    assert not os.path.exists(d + "/k.error")
    # the finished job is not asked again
    assert "resuming job k.prompt" not in open(m.log).read()


def test_failed_job_error_comes_back_from_the_journal(mount_factory):
    m = mount_factory()
    d = m.model()
    sh("echo 'no [[fault:status code=400]]' > %s/f.prompt" % d, check=False)
    meta = wait_finished(d, "f")
    assert meta["status"] == "failed", meta
    error = open(d + "/f.error").read()
    m.kill9()
    os.unlink(tree(m, "openai", "us", "gpt-4o", "f.error"))
    m.start()
    assert open(d + "/f.error").read() == error
    data, err = read_all(d + "/f.response")
    assert err == 5  # EIO, as before the crash


def test_moved_workspace_resumes_its_job_at_the_new_place(mount_factory, fake):
    m = mount_factory()
    d = m.model()
    os.mkdir(d + "/ws")
    sh("echo 'moving [[fault:gate name=jmove]]' > %s/ws/j.prompt" % d)
    os.rename(d + "/ws", d + "/ws2")
    m.kill9()
    m.start()
    m.wait_log("resuming job j.prompt")
    fake.open_gate("jmove")
    assert open(d + "/ws2/j.response").read() == "echo: moving [[fault:gate name=jmove]]\n"
    assert read_meta(d + "/ws2/j.meta")["status"] == "done"
    assert not os.path.exists(d + "/ws")


def test_workspace_moved_under_another_model_resumes_there(mount_factory, fake):
    m = mount_factory()
    d = m.model()
    os.mkdir(d + "/outer")
    os.mkdir(d + "/outer/inner")
    sh("echo 'deep [[fault:gate name=jdeep]]' > %s/outer/inner/j.prompt" % d)
    target = m.model("local", "localhost", "llama3.2")
    os.rename(d + "/outer", target + "/outer")
    m.kill9()
    m.start()
    m.wait_log("resuming job j.prompt")
    fake.open_gate("jdeep")
    assert open(target + "/outer/inner/j.response").read() == \
        "echo: deep [[fault:gate name=jdeep]]\n"
    assert read_meta(target + "/outer/inner/j.meta")["route"] == "local/localhost/llama3.2"


def test_lost_prompt_file_is_written_again_from_the_journal(mount_factory, fake):
    m = mount_factory()
    d = m.model()
    # after the mount's checkpoint, whose syncfs would make the prompt
    # durable (and its text in the journal no longer needed)
    m.wait_log("journal: checkpoint done")
    sh("echo 'remember me [[fault:gate name=jlost]]' > %s/p.prompt" % d)
    m.kill9()
    # a power cut can leave a new file empty: its text was in the journal
    open(tree(m, "openai", "us", "gpt-4o", "p.prompt"), "w").close()
    m.start()
    m.wait_log("resuming job p.prompt")
    fake.open_gate("jlost")
    assert open(d + "/p.response").read() == "echo: remember me [[fault:gate name=jlost]]\n"
    assert open(d + "/p.prompt").read() == "remember me [[fault:gate name=jlost]]\n"


def test_removed_prompt_is_not_resumed(mount_factory, fake):
    m = mount_factory()
    d = m.model()
    sh("echo 'gone soon [[fault:gate name=jgone]]' > %s/g.prompt" % d)
    os.unlink(d + "/g.prompt")
    sh("echo 'replaced [[fault:gate name=jrep]]' > %s/r.prompt" % d)
    sh("echo 'second [[fault:gate name=jrep2]]' > %s/r.prompt" % d)
    m.kill9()
    m.start()
    m.wait_log("resuming job r.prompt")
    fake.open_gate("jrep2")
    assert open(d + "/r.response").read() == "echo: second [[fault:gate name=jrep2]]\n"
    log = open(m.log).read()
    assert log.count("resuming job r.prompt") == 1
    assert "resuming job g.prompt" not in log
    assert not os.path.exists(d + "/g.meta")
    fake.open_gate("jgone")
    fake.open_gate("jrep")


def test_mount_compacts_the_journal(mount_factory):
    m = mount_factory()
    d = m.model()
    sh("for i in $(seq 1 50); do echo \"c $i\" > %s/c$i.prompt; done" % d)
    assert wait_for(lambda: all(os.path.exists("%s/c%d.meta" % (d, i)) and
                                read_meta("%s/c%d.meta" % (d, i))["status"] == "done"
                                for i in range(1, 51)))
    m.kill9()
    m.start()
    # replayed, then cut: one segment (the new one) holds what is left
    assert wait_for(lambda: len(os.listdir(os.path.join(m.state, "journal"))) == 1)
    m.kill9()
    m.start()
    assert open(d + "/c50.response").read() == "echo: c 50\n"
    assert "resuming job c" not in open(m.log).read()


def test_state_dir_from_before_the_journal_resumes_its_jobs(mount_factory, fake):
    m = mount_factory()
    d = m.model()
    sh("echo 'old layout [[fault:gate name=jold]]' > %s/o.prompt" % d)
    m.kill9()
    # a state_dir written before the journal existed: only the tree
    journal = os.path.join(m.state, "journal")
    for name in os.listdir(journal):
        os.unlink(os.path.join(journal, name))
    os.rmdir(journal)
    m.start()
    m.wait_log("resuming job o.prompt")
    fake.open_gate("jold")
    assert open(d + "/o.response").read() == "echo: old layout [[fault:gate name=jold]]\n"
    assert os.path.isdir(journal)
