"""state_dir/audit.jsonl (SPEC §8): one line per finished job (done, failed,
cancelled) and per refused submission, with the submitter's uid and pid, the
prompt's path, the outcome, route, attempts, tokens, cost, the journal id and
the SHA-256 of prompt and answer; their text only under the policy
audit_prompts. No line is lost or written twice across kill -9 (the journal's
ends remake missing ones at mount), and SIGHUP reopens the file (and
log=FILE) for logrotate."""
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import uuid

import pytest

from conftest import ROOT, long_answer, read_all, sh, wait_for, wait_finished

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
KEYS = ["time", "journal_id", "submitted", "outcome", "errno", "reason", "uid", "pid", "path",
        "route", "attempts", "tokens", "cost_usd", "prompt_sha256", "response_sha256"]


def sha(data):
    return hashlib.sha256(data).hexdigest()


def audit_path(m):
    return os.path.join(m.state, "audit.jsonl")


def audit_lines(m, name="audit.jsonl", whole=False):
    """The lines of the audit file NAME. A line being written may be seen
    in part: it is left out, unless WHOLE says the file must end whole (the
    daemon is not writing)."""
    path = os.path.join(m.state, name)
    if not os.path.exists(path):
        return []
    raw = open(path, "rb").read()
    if whole:
        assert raw == b"" or raw.endswith(b"\n"), "a line without its newline"
    return [json.loads(line) for line in raw.decode().split("\n")[:-1]]


def lines_for(m, path, name="audit.jsonl"):
    return [line for line in audit_lines(m, name) if line["path"] == path]


def one_line(m, path, timeout=15):
    """Waits for the line of the prompt PATH; asserts it is the only one."""
    assert wait_for(lambda: lines_for(m, path), timeout), "no audit line for " + path
    found = lines_for(m, path)
    assert len(found) == 1, found
    line = found[0]
    assert list(line)[:len(KEYS)] == KEYS
    assert TIME.match(line["time"])
    return line


def submit(path, data):
    """Writes and closes a prompt from this process (its pid is ours)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def setpolicy(path, key, value):
    os.setxattr(path, "user.policy." + key, value.encode())


def unique(word):
    return "%s %s" % (word, uuid.uuid4().hex[:8])


def test_done_job_line_has_every_field_and_only_hashes(mnt):
    d = mnt.model()
    prompt = unique("audited").encode() + b"\n"
    submit(d + "/x.prompt", prompt)
    answer, err = read_all(d + "/x.response")
    assert err == 0
    meta = wait_finished(d, "x")
    line = one_line(mnt, d + "/x.prompt")
    assert line["outcome"] == "done"
    assert line["errno"] is None and line["reason"] is None
    assert line["uid"] == 0 and line["pid"] == os.getpid()
    assert isinstance(line["journal_id"], int) and line["journal_id"] > 0
    assert line["submitted"] == meta["submitted"] and line["time"] == meta["finished"]
    assert line["route"] == "openai/us/gpt-4o"
    assert [a["outcome"] for a in line["attempts"]] == ["ok"]
    assert line["attempts"][0]["target"] == "openai/us/gpt-4o"
    assert line["tokens"] == {"input": meta["usage"]["input_tokens"],
                              "output": meta["usage"]["output_tokens"]}
    assert line["cost_usd"] == pytest.approx(meta["cost_usd"])
    assert line["prompt_sha256"] == sha(prompt) == meta["prompt_sha256"]
    assert line["response_sha256"] == sha(answer)
    # audit_prompts is false by default: hashes only
    assert "prompt" not in line and "response" not in line
    assert meta["pid"] == os.getpid()
    st = os.stat(audit_path(mnt))
    assert stat.S_IMODE(st.st_mode) == 0o600
    # money in fixed decimal notation, as awk reads it
    raw = open(audit_path(mnt)).read()
    assert "e-" not in re.search(r'"cost_usd":([^,]*)', raw).group(1)


def test_failed_job_line_says_why(mnt):
    d = mnt.model()
    submit(d + "/f.prompt", b"refused upstream [[fault:status code=400 message=bad_thing]]")
    assert read_all(d + "/f.response")[1] == errno.EIO
    line = one_line(mnt, d + "/f.prompt")
    assert line["outcome"] == "failed"
    assert line["reason"] == open(d + "/f.error").readline().rstrip("\n")
    assert line["response_sha256"] is None
    assert line["errno"] is None and line["pid"] == os.getpid()
    assert [a["outcome"] for a in line["attempts"]] == ["http_400"]


def test_cancelled_job_has_one_line_when_its_prompt_is_removed(mnt, fake):
    d = mnt.model()
    gate = uuid.uuid4().hex
    submit(d + "/c.prompt", ("held [[fault:gate name=%s]]" % gate).encode())
    assert wait_for(lambda: json.load(open(d + "/c.meta"))["status"] == "running")
    os.unlink(d + "/c.prompt")
    # written by rm itself, before it returns
    line = one_line(mnt, d + "/c.prompt", timeout=0)
    fake.open_gate(gate)
    assert line["outcome"] == "cancelled"
    assert line["response_sha256"] is None and line["errno"] is None
    assert line["pid"] == os.getpid()
    # a new job of the same name, done, is a line of its own
    submit(d + "/c.prompt", b"again")
    assert read_all(d + "/c.response") == (b"echo: again", 0)
    assert wait_for(lambda: len(lines_for(mnt, d + "/c.prompt")) == 2)
    assert [line["outcome"] for line in lines_for(mnt, d + "/c.prompt")] == ["cancelled", "done"]


def test_refusal_at_open_is_one_line_with_its_errno_and_reason(mnt, fake):
    setpolicy(os.path.join(mnt.path, "openai"), "providers", "azure")
    d = mnt.model()
    with pytest.raises(OSError) as e:
        os.open(d + "/r.prompt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    assert e.value.errno == errno.EACCES
    line = one_line(mnt, d + "/r.prompt", timeout=0)
    assert line["outcome"] == "refused" and line["errno"] == "EACCES"
    assert line["reason"] == open(d + "/r.error").readline().rstrip("\n")
    assert line["journal_id"] is None and line["submitted"] is None
    assert line["prompt_sha256"] is None and line["response_sha256"] is None
    assert line["route"] is None and line["attempts"] == [] and line["tokens"] is None
    assert line["uid"] == 0 and line["pid"] == os.getpid()


def test_refusal_at_close_is_one_line_with_the_refused_prompts_hash(mnt, fake):
    d = mnt.model()
    # an empty prompt fits (gpt-4o: 0.00102 at most), this JSON request's
    # message does not; a JSON request is costed at close()
    setpolicy(d, "max_output_tokens", "100")
    setpolicy(d, "max_request_usd", "0.001121")
    text = json.dumps({"messages": [{"role": "user",
                                     "content": unique("too dear") + " " + "x" * 60}]}).encode()
    fd = os.open(d + "/q.prompt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, text)
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EDQUOT
    line = one_line(mnt, d + "/q.prompt", timeout=0)
    assert line["outcome"] == "refused" and line["errno"] == "EDQUOT"
    assert line["reason"] == open(d + "/q.error").readline().rstrip("\n")
    assert "max_request_usd" in line["reason"]
    assert line["prompt_sha256"] == sha(text)
    assert "prompt" not in line
    # a refused rename too, as the user that did it
    with open(d + "/draft.txt", "wb") as f:
        f.write(text)
    r = sh("mv %s/draft.txt %s/m.prompt" % (d, d), check=False, user=0)
    assert r.returncode != 0
    line = one_line(mnt, d + "/m.prompt", timeout=0)
    assert line["errno"] == "EDQUOT" and line["prompt_sha256"] == sha(text)
    assert line["pid"] not in (None, os.getpid())


def test_prompt_a_write_failed_to_store_is_one_refused_line_without_a_hash(mnt):
    d = mnt.model()
    setpolicy(d, "max_prompt_bytes", "10")
    fd = os.open(d + "/w.prompt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with pytest.raises(OSError) as e:
        os.write(fd, b"01234567890")
    assert e.value.errno == errno.EFBIG
    with pytest.raises(OSError):
        os.close(fd)
    line = one_line(mnt, d + "/w.prompt", timeout=0)
    assert line["outcome"] == "refused" and line["errno"] == "EFBIG"
    assert line["reason"] == open(d + "/w.error").readline().rstrip("\n")
    assert line["prompt_sha256"] is None and line["pid"] == os.getpid()


def test_audit_prompts_puts_the_exact_texts_in_the_line(mnt):
    d = mnt.model()
    setpolicy(d, "audit_prompts", "true")
    prompt = 'quote " backslash \\ tab \t bell \x07 é 世界 😀\nend'.encode()
    submit(d + "/t.prompt", prompt)
    answer, err = read_all(d + "/t.response")
    assert err == 0
    line = one_line(mnt, d + "/t.prompt")
    assert line["prompt"].encode() == prompt and line["prompt_sha256"] == sha(prompt)
    assert line["response"].encode() == answer and line["response_sha256"] == sha(answer)
    # an answer larger than the journal holds is read back from its file
    big = "big %s [[fault:long bytes=300000]]" % uuid.uuid4().hex[:8]
    submit(d + "/big.prompt", big.encode())
    answer, err = read_all(d + "/big.response")
    assert err == 0 and answer == long_answer(big, 300000).encode()
    line = one_line(mnt, d + "/big.prompt")
    assert line["response"].encode() == answer and line["response_sha256"] == sha(answer)
    # a refusal's line carries the refused text too (one refused at
    # close(): a JSON request too dear for the cap)
    setpolicy(d, "max_request_usd", "0.001121")
    setpolicy(d, "max_output_tokens", "100")
    text = json.dumps({"messages": [{"role": "user", "content": unique(
        "refused but audited") + " " + "x" * 60}]}).encode()
    with pytest.raises(OSError):
        submit(d + "/no.prompt", text)
    line = one_line(mnt, d + "/no.prompt", timeout=0)
    assert line["prompt"].encode() == text and line["response"] is None
    # switched off below: hashes only again
    os.mkdir(d + "/quiet")
    setpolicy(d + "/quiet", "audit_prompts", "false")
    setpolicy(d, "max_request_usd", "1")
    submit(d + "/quiet/q.prompt", b"not in the log")
    answer, _ = read_all(d + "/quiet/q.response")
    line = one_line(mnt, d + "/quiet/q.prompt")
    assert "prompt" not in line and "response" not in line
    assert line["prompt_sha256"] == sha(b"not in the log")
    assert line["response_sha256"] == sha(answer)


def run_jobs(d, names):
    for name in names:
        submit("%s/%s.prompt" % (d, name), unique(name).encode())
    for name in names:
        assert read_all("%s/%s.response" % (d, name))[1] == 0


def test_kill9_right_after_jobs_end_leaves_one_line_each(mount_factory):
    m = mount_factory()
    d = m.model()
    first = ["k%d" % i for i in range(20)]
    run_jobs(d, first)
    m.kill9()
    # a crash in the middle of a write leaves a line without its end
    with open(audit_path(m), "ab") as f:
        f.write(b'{"time":"2026-11-26T10:00:00Z","journal_id":')
    m.start()
    for name in first:
        one_line(m, "%s/%s.prompt" % (d, name))
    # the mount's checkpoint noted where the file was: the next search for
    # missing lines starts there
    second = ["n%d" % i for i in range(20)]
    run_jobs(d, second)
    m.kill9()
    m.start()
    for name in first + second:
        one_line(m, "%s/%s.prompt" % (d, name))
    # and after a clean remount: nothing written twice
    assert m.unmount() == 0
    m.start()
    m.wait_log("mounted", count=4)
    assert len(audit_lines(m, whole=True)) == len(first) + len(second)
    assert "cut a line a crash left unfinished" in open(m.log).read()


def test_lines_lost_in_a_crash_are_written_once_at_mount(mount_factory, fake):
    """Lines that could not reach the file (it is a directory for a while,
    so they wait in memory) are lost with the daemon; the journal's ends
    and cancels give them back at the next mount, once, and the lines
    already written are not repeated."""
    m = mount_factory()
    d = m.model()
    before = ["a%d" % i for i in range(5)]
    texts = {}
    for name in before:
        texts[name] = unique(name).encode()
        submit("%s/%s.prompt" % (d, name), texts[name])
        assert read_all("%s/%s.response" % (d, name))[1] == 0
    for name in before:
        one_line(m, "%s/%s.prompt" % (d, name))
    kept = os.path.join(m.state, "kept.jsonl")
    os.rename(audit_path(m), kept)
    os.mkdir(audit_path(m))
    m.proc.send_signal(signal.SIGHUP)
    m.wait_log("config reloaded")
    after = ["b%d" % i for i in range(5)]
    answers = {}
    for name in after:
        texts[name] = unique(name).encode()
        submit("%s/%s.prompt" % (d, name), texts[name])
        answers[name], err = read_all("%s/%s.response" % (d, name))
        assert err == 0
    submit(d + "/f.prompt", b"fails [[fault:status code=400]]")
    assert read_all(d + "/f.response")[1] == errno.EIO
    gate = uuid.uuid4().hex
    submit(d + "/c.prompt", ("held [[fault:gate name=%s]]" % gate).encode())
    assert wait_for(lambda: json.load(open(d + "/c.meta"))["status"] == "running")
    os.unlink(d + "/c.prompt")
    m.wait_log("cannot write audit.jsonl")
    m.kill9()
    fake.open_gate(gate)
    os.rmdir(audit_path(m))
    os.rename(kept, audit_path(m))
    m.start()
    m.wait_log("line(s) a crash had lost written again from the journal")
    for name in before:
        one_line(m, "%s/%s.prompt" % (d, name))
    for name in after:
        line = one_line(m, "%s/%s.prompt" % (d, name))
        assert line["outcome"] == "done"
        assert line["prompt_sha256"] == sha(texts[name])
        assert line["response_sha256"] == sha(answers[name])
        assert line["pid"] == os.getpid()
    assert one_line(m, d + "/f.prompt")["outcome"] == "failed"
    assert one_line(m, d + "/c.prompt")["outcome"] == "cancelled"
    assert m.unmount() == 0
    m.start()
    assert len(audit_lines(m)) == len(before) + len(after) + 2


def test_sighup_reopens_the_audit_file_and_the_log(mount_factory, tmp_path):
    log = os.path.join(str(tmp_path), "daemon.log")
    m = mount_factory(options=["log=" + log])
    d = m.model()
    submit(d + "/one.prompt", b"before the rotation")
    assert read_all(d + "/one.response")[1] == 0
    one_line(m, d + "/one.prompt")
    # logrotate: move both away, then SIGHUP
    os.rename(audit_path(m), audit_path(m) + ".1")
    os.rename(log, log + ".1")
    m.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: os.path.exists(log) and "config reloaded" in open(log).read())
    submit(d + "/two.prompt", b"after the rotation")
    assert read_all(d + "/two.response")[1] == 0
    one_line(m, d + "/two.prompt")
    assert [line["path"] for line in audit_lines(m)] == [d + "/two.prompt"]
    assert [line["path"] for line in audit_lines(m, "audit.jsonl.1")] == [d + "/one.prompt"]
    assert stat.S_IMODE(os.stat(audit_path(m)).st_mode) == 0o600
    assert wait_for(lambda: "/two.prompt uid 0 done" in open(log).read())
    assert "job two.prompt" not in open(log + ".1").read()
    # copytruncate: the next line starts the emptied file, no hole before it
    os.truncate(audit_path(m), 0)
    submit(d + "/three.prompt", b"after the truncation")
    assert read_all(d + "/three.response")[1] == 0
    one_line(m, d + "/three.prompt")
    assert [line["path"] for line in audit_lines(m)] == [d + "/three.prompt"]


@pytest.mark.skipif(not shutil.which("logrotate"), reason="logrotate is not installed")
def test_logrotate_example_rotates_the_audit_file_and_the_log(mount_factory, tmp_path):
    """examples/logrotate, with this mount's paths and pid, run by logrotate
    itself: the old lines stay in the rotated files, the new ones go to the
    new files."""
    log = os.path.join(str(tmp_path), "promptfs.log")
    m = mount_factory(options=["log=" + log])
    d = m.model()
    submit(d + "/old.prompt", b"before logrotate")
    assert read_all(d + "/old.response")[1] == 0
    one_line(m, d + "/old.prompt")
    conf = open(os.path.join(ROOT, "examples", "logrotate")).read()
    conf = conf.replace("/var/lib/promptfs/audit.jsonl", audit_path(m))
    conf = conf.replace("/var/log/promptfs.log", log)
    conf, n = re.subn(r"systemctl reload promptfs\.service.*", "kill -HUP %d" % m.proc.pid, conf)
    assert n == 1
    conf_path = os.path.join(str(tmp_path), "logrotate.conf")
    with open(conf_path, "w") as f:
        f.write(conf)
    sh("logrotate -f -s %s/logrotate.status %s" % (tmp_path, conf_path))
    assert wait_for(lambda: "config reloaded" in open(log).read())
    submit(d + "/new.prompt", b"after logrotate")
    assert read_all(d + "/new.response")[1] == 0
    one_line(m, d + "/new.prompt")
    assert [line["path"] for line in audit_lines(m)] == [d + "/new.prompt"]
    assert [line["path"] for line in audit_lines(m, "audit.jsonl.1")] == [d + "/old.prompt"]
    assert stat.S_IMODE(os.stat(audit_path(m) + ".1").st_mode) == 0o600
    assert "/old.prompt uid 0 done" in open(log + ".1").read()
    assert wait_for(lambda: "/new.prompt uid 0 done" in open(log).read())
