"""Legacy batch, shown working (issue 10): the examples that shell, cron,
awk and COBOL users start from, each run against the simulated cloud,
failed and refused jobs included; and the README's recipes for scripts:
the end of a job known from NAME.error and NAME.meta (never from a read
error), a reader's EIO from a cut attempt told from a failed job, a
workspace backed up from state_dir/tree and its prompts put back."""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT, read_all, read_meta, sh, wait_finished

EXAMPLES = ROOT + "/examples"
# cron's environment: no PATH of the user's, no HOME of a login
CRON_ENV = {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "LANG": "C.UTF-8"}

# the first attempt sends 12 bytes, pauses (a reader surely gets them),
# sends a little more and is cut; the retry answers in full
CUT_ONCE = "[[fault:cut after=20 times=1]] [[fault:stall after=12 seconds=1 times=1]]"


@pytest.fixture(scope="module")
def cobol(tmp_path_factory):
    """Compiles examples/askai.cbl; the path of the program."""
    cobc = shutil.which("cobc")
    if not cobc:
        pytest.skip("cobc is not installed (Debian package gnucobol; tests/lib/deps.sh)")
    out = tmp_path_factory.mktemp("cobol")
    os.chmod(out, 0o755)
    # -debug: libcob checks subscripts and reference modification at run
    # time; -Wall: the example compiles without a warning
    r = subprocess.run([cobc, "-x", "-Wall", "-debug", "-o", str(out / "askai"),
                        EXAMPLES + "/askai.cbl"], capture_output=True, timeout=120)
    assert r.returncode == 0 and r.stdout + r.stderr == b"", r.stderr.decode()
    return out


def write(path, data, mode="w"):
    with open(path, mode) as f:
        f.write(data)


def askai(program, model_dir, name, question, workdir, seconds=30):
    """Runs the COBOL program on a question given as text (or bytes);
    returns (return code, stdout, stderr, the answer file's text or None)."""
    qfile = os.path.join(workdir, name + ".question")
    afile = os.path.join(workdir, name + ".answer")
    write(qfile, question, "wb" if isinstance(question, bytes) else "w")
    r = subprocess.run([str(program / "askai"), model_dir, name, qfile, afile, str(seconds)],
                       capture_output=True, timeout=seconds + 30)
    answer = open(afile).read() if os.path.exists(afile) else None
    return r.returncode, r.stdout.decode(), r.stderr.decode(), answer


def test_cobol_program_gets_a_complete_answer_line_by_line(mnt, cobol, tmp_path):
    d = mnt.model()
    question = "What is 2+2?\n\nAnswer in one word.\n"
    rc, out, err, answer = askai(cobol, d, "sum", question, str(tmp_path))
    assert rc == 0, err
    assert out == "askai: sum: done, 3 lines in %s/sum.answer\n" % tmp_path
    assert answer == "echo: " + question
    # what it wrote with LINE SEQUENTIAL is the prompt, byte for byte
    assert open(d + "/sum.prompt").read() == question
    assert read_meta(d + "/sum.meta")["status"] == "done"
    assert not os.path.exists(d + "/sum.error")


def test_cobol_program_waits_out_a_cut_attempt_and_gets_the_retry_s_answer(mnt, cobol,
                                                                           tmp_path):
    d = mnt.model()
    question = "a long answer, cut once " + CUT_ONCE + "\n"
    rc, out, err, answer = askai(cobol, d, "cut", question, str(tmp_path))
    assert rc == 0, err
    assert answer == "echo: " + question
    assert [a["outcome"] for a in read_meta(d + "/cut.meta")["attempts"]] == ["stream_cut", "ok"]


def test_cobol_program_tells_a_failed_job_from_a_complete_one(mnt, cobol, tmp_path):
    """Every attempt is cut after 5 bytes, so the job fails with bytes
    already sent: the program says so, return code 1, no answer file."""
    d = mnt.model()
    rc, out, err, answer = askai(cobol, d, "broken", "always cut [[fault:cut after=5]]\n",
                                 str(tmp_path))
    assert rc == 1, (out, err)
    assert answer is None
    error = open(d + "/broken.error").read()
    assert "broken.prompt failed; %s/broken.error says:" % d in err
    assert "  " + error.splitlines()[0] in err
    assert read_meta(d + "/broken.meta")["status"] == "failed"

    rc, out, err, answer = askai(cobol, d, "bad", "[[fault:status code=400]] hello\n",
                                 str(tmp_path))
    assert rc == 1 and answer is None
    assert "bad.prompt failed" in err and "HTTP 400" in err


def test_why_the_cobol_program_does_not_trust_a_read_status(mnt, tmp_path):
    """The reason for the rule: libcob reports the EIO of a failed answer
    as status 10, the end of the file, so a plain READ loop takes a failed
    job for an empty (or a cut) complete answer."""
    cobc = shutil.which("cobc")
    if not cobc:
        pytest.skip("cobc is not installed (Debian package gnucobol)")
    write(tmp_path / "naive.cbl", """\
       IDENTIFICATION DIVISION.
       PROGRAM-ID. NAIVE.
       ENVIRONMENT DIVISION.
       INPUT-OUTPUT SECTION.
       FILE-CONTROL.
           SELECT RESPONSE-FILE ASSIGN TO WS-PATH
               ORGANIZATION IS LINE SEQUENTIAL
               FILE STATUS IS WS-STATUS.
       DATA DIVISION.
       FILE SECTION.
       FD  RESPONSE-FILE.
       01  RESPONSE-RECORD         PIC X(4096).
       WORKING-STORAGE SECTION.
       01  WS-PATH                 PIC X(4096).
       01  WS-STATUS               PIC XX.
       01  WS-LINES                PIC 9(4) VALUE 0.
       PROCEDURE DIVISION.
           ACCEPT WS-PATH FROM ARGUMENT-VALUE
           OPEN INPUT RESPONSE-FILE
           PERFORM UNTIL WS-STATUS NOT = "00"
               READ RESPONSE-FILE
               IF WS-STATUS = "00"
                   ADD 1 TO WS-LINES
               END-IF
           END-PERFORM
           DISPLAY WS-LINES " lines, status " WS-STATUS
           CLOSE RESPONSE-FILE
           STOP RUN.
""")
    subprocess.run([cobc, "-x", "-o", str(tmp_path / "naive"), str(tmp_path / "naive.cbl")],
                   check=True, capture_output=True, timeout=120)
    d = mnt.model()
    sh("echo 'always cut [[fault:cut after=5]]' > %s/f.prompt" % d)
    assert wait_finished(d, "f")["status"] == "failed"
    assert read_all(d + "/f.response")[1] != 0  # a read error, for whoever can see it
    r = sh("%s/naive %s/f.response" % (tmp_path, d))
    assert r.stdout == b"0000 lines, status 10\n"


def test_cobol_program_reports_refused_prompts(mnt, fake, cobol, tmp_path):
    d = mnt.model()
    # at OPEN: a policy excludes this deployment (file status 37)
    os.mkdir(d + "/local-only")
    write(d + "/local-only/.policy", '{"providers": ["local"]}')
    rc, out, err, answer = askai(cobol, d + "/local-only", "q", "refused at open\n",
                                 str(tmp_path))
    assert rc == 1 and answer is None
    assert "local-only/q.prompt was refused (file status 37)" in err
    assert "providers does not include openai" in err
    # at the CLOSE, which libcob does not report: NAME.error does
    rc, out, err, answer = askai(cobol, d, "latin1", b"caf\xe9\n", str(tmp_path))
    assert rc == 1 and answer is None
    assert "latin1.prompt was refused; %s/latin1.error says:" % d in err
    assert "not valid UTF-8" in err
    assert not os.path.exists(d + "/latin1.meta")
    # at a WRITE libcob flushes: over 1 MiB (file status 30)
    rc, out, err, answer = askai(cobol, d, "big", ("x" * 30000 + "\n") * 40, str(tmp_path))
    assert rc == 1 and answer is None
    assert "big.prompt was refused (file status 30)" in err
    assert "larger than the limit" in err
    assert fake.requests_for("refused at open\n") == 0
    # wrong arguments
    r = subprocess.run([str(cobol / "askai"), d], capture_output=True)
    assert r.returncode == 2 and b"usage: askai" in r.stderr


def run_cron(inbox, outbox, jobs, seconds=60):
    return subprocess.run(["bash", EXAMPLES + "/cron-ask.sh", inbox, outbox, jobs, str(seconds)],
                          capture_output=True, env=CRON_ENV, timeout=seconds + 60)


def test_cron_script_answers_the_inbox_and_says_why_a_job_failed(mnt, tmp_path):
    d = mnt.model()
    inbox, outbox = str(tmp_path / "inbox"), str(tmp_path / "outbox")
    os.mkdir(inbox)
    os.mkdir(outbox)
    jobs = d + "/cron"
    questions = {
        "capital": "What is the capital of France?\n",
        "placeholder": "{x} is a placeholder in Python format strings, explain\n",
        "cut": "cut once, then answered " + CUT_ONCE + "\n",
        "bad": "[[fault:status code=400]] bad request\n",
    }
    for name, text in questions.items():
        write(os.path.join(inbox, name + ".txt"), text)
    write(os.path.join(inbox, "latin1.txt"), b"caf\xe9\n", "wb")

    r = run_cron(inbox, outbox, jobs)
    assert r.returncode == 1, r.stderr
    assert r.stdout == b"cron-ask: 4 asked, 3 answered, 2 failed, 0 still running\n"
    errors = sorted(r.stderr.decode().splitlines())
    assert errors[0].startswith("bad: The provider answered HTTP 400")
    assert errors[1].startswith("latin1: The prompt was refused") and "UTF-8" in errors[1]
    assert len(errors) == 2
    for name in ("capital", "placeholder", "cut"):
        assert open("%s/%s.answer" % (outbox, name)).read() == "echo: " + questions[name]
    assert "HTTP 400" in open(outbox + "/bad.failed").read()
    assert "not valid UTF-8" in open(outbox + "/latin1.failed").read()
    # every question moved beside its answer; the jobs are gone from the mount
    assert os.listdir(inbox) == []
    assert sorted(n for n in os.listdir(outbox) if n.endswith(".txt")) == \
        ["bad.txt", "capital.txt", "cut.txt", "latin1.txt", "placeholder.txt"]
    assert os.listdir(jobs) == []

    # nothing new: quiet, exit 0
    r = run_cron(inbox, outbox, jobs)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


def test_cron_script_leaves_a_running_job_to_the_next_run(mnt, fake, tmp_path):
    d = mnt.model()
    inbox, outbox = str(tmp_path / "inbox"), str(tmp_path / "outbox")
    os.mkdir(inbox)
    os.mkdir(outbox)
    jobs = d + "/cron"
    text = "held [[fault:gate name=cron-late]]\n"
    write(inbox + "/late.txt", text)
    r = run_cron(inbox, outbox, jobs, seconds=1)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"cron-ask: 1 asked, 0 answered, 0 failed, 1 still running\n"
    assert not os.path.exists(outbox + "/late.answer")
    fake.open_gate("cron-late")
    r = run_cron(inbox, outbox, jobs)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"cron-ask: 0 asked, 1 answered, 0 failed, 0 still running\n"
    assert open(outbox + "/late.answer").read() == "echo: " + text
    assert fake.requests_for(text) == 1


def test_batch_script_answers_in_order_and_waits_out_a_cut_attempt(mnt, tmp_path):
    """batch.sh reads an answer only once its job is done: the cut attempt
    of question 2 does not make it a failure, question 3 fails."""
    d = mnt.model()
    lines = ["{x} is a placeholder in Python format strings, explain",
             "cut once " + CUT_ONCE,
             "[[fault:status code=400]] refused by the provider",
             "last question"]
    write(tmp_path / "questions.txt", "\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n")
    r = subprocess.run(["bash", EXAMPLES + "/batch.sh", str(tmp_path / "questions.txt"), d, "4"],
                       capture_output=True, timeout=120)
    assert r.returncode == 1, r.stderr
    out = r.stdout.decode()
    blocks = out.split("\n\n")
    assert blocks[0] == "[1] %s\necho: %s" % (lines[0], lines[0])
    assert blocks[1] == "[2] %s\necho: %s" % (lines[1], lines[1])
    assert blocks[2].startswith("[3] %s\nFAILED: The provider answered HTTP 400" % lines[2])
    assert blocks[3] == "[4] %s\necho: %s" % (lines[3], lines[3])
    assert "3/4 answered, failed: 3; files in " in r.stderr.decode()


def awk_programs():
    """Debian's awk (mawk), and gawk, also held to POSIX, where installed
    (tests/lib/deps.sh installs it)."""
    found = [p for p in ("/usr/bin/mawk", "/usr/bin/gawk") if os.path.exists(p)]
    if "/usr/bin/gawk" in found:
        found.append("/usr/bin/gawk --posix")
    return found


def test_awk_report_sums_the_meta_files(mount_factory, fake):
    m = mount_factory()
    ws = m.model() + "/nightly"
    mini = m.model(model="gpt-4o-mini") + "/nightly"
    os.mkdir(ws)
    os.mkdir(mini)
    for i in range(3):
        sh("echo 'question %d' > %s/q%d.prompt" % (i, ws, i))
    sh("echo '[[fault:status code=400]] no' > %s/failed.prompt" % ws)
    sh("echo 'small model' > %s/m.prompt" % mini)
    sh("echo 'held [[fault:gate name=awk-held]]' > %s/held.prompt" % mini)
    try:
        check_awk_report(ws, mini)
    finally:
        fake.open_gate("awk-held")
    wait_finished(mini, "held")


def check_awk_report(ws, mini):
    for d, names in ((ws, ["q0", "q1", "q2", "failed"]), (mini, ["m"])):
        for name in names:
            wait_finished(d, name)

    metas = []
    for d in (ws, mini):
        metas += [read_meta(os.path.join(d, n)) for n in os.listdir(d) if n.endswith(".meta")]
    expected = {}
    for meta in metas:
        attempts = meta.get("attempts") or [{"target": "-"}]
        route = meta.get("route") or attempts[-1]["target"]
        row = expected.setdefault(route, [0, 0, 0, 0, 0, 0.0])
        row[{"done": 0, "failed": 1}.get(meta["status"], 2)] += 1
        row[3] += meta.get("usage", {}).get("input_tokens", 0)
        row[4] += meta.get("usage", {}).get("output_tokens", 0)
        row[5] += meta.get("cost_usd", 0)
    assert expected["openai/us/gpt-4o"][:3] == [3, 1, 0]
    assert expected["openai/us/gpt-4o-mini"][:3] == [1, 0, 0]
    assert expected["-"][:3] == [0, 0, 1]  # held before its first attempt
    assert expected["openai/us/gpt-4o"][5] > 0

    programs = awk_programs()
    assert "/usr/bin/mawk" in programs  # Debian's awk
    for awk in programs:
        r = sh("find %s %s -name '*.meta' -exec %s -f %s/meta-report.awk {} +" %
               (ws, mini, awk, EXAMPLES))
        lines = r.stdout.decode().splitlines()
        assert lines[0].split() == ["route", "done", "failed", "running", "in_tokens",
                                    "out_tokens", "cost_usd"]
        rows = {f[0]: f[1:] for f in (line.split() for line in lines[1:])}
        assert list(rows)[:-1] == sorted(expected) and list(rows)[-1] == "total", awk
        for route, want in expected.items():
            got = rows[route]
            assert [int(x) for x in got[:5]] == want[:5], (awk, route)
            assert abs(float(got[5]) - want[5]) < 1e-9, (awk, route)
        total = [sum(row[i] for row in expected.values()) for i in range(6)]
        assert [int(x) for x in rows["total"][:5]] == total[:5]
        assert abs(float(rows["total"][5]) - total[5]) < 1e-9


def test_readme_recipe_tells_a_cut_attempt_from_a_failed_job(mnt):
    """A `cat` streaming the answer fails with EIO when the attempt it
    reads is cut; the README's loop then sees the job go on to "done" and
    a new read gives the whole answer. A job that really failed has its
    NAME.error."""
    d = mnt.model()
    text = "streamed, cut once " + CUT_ONCE
    script = """
        cd {d}
        echo '{text}' > q.prompt
        cat q.response > /dev/null && exit 3   # the cut attempt: EIO, not EOF
        until [ -e q.error ] || grep -q '"status":"done"' q.meta; do sleep 0.1; done
        if [ -e q.error ]; then cat q.error >&2; exit 1; fi
        cat q.response
    """.format(d=d, text=text)
    r = sh(script, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("echo: %s\n" % text).encode()
    assert b"Input/output error" in r.stderr

    r = sh(script.replace(CUT_ONCE, "[[fault:cut after=5]]").replace("q.", "f."), check=False)
    assert r.returncode == 1
    assert open(d + "/f.error").readline().encode() in r.stderr


def test_readme_backup_from_state_dir_and_prompts_put_back(mnt, fake, tmp_path):
    """Through the mount, tar stops short at a failed job's answer, and a
    generated file cannot be copied in; from state_dir/tree the workspace
    archives cleanly, and extracting its prompts only asks them again."""
    d = mnt.model()
    ws = d + "/nightly"
    os.mkdir(ws)
    sh("echo 'kept question' > %s/a.prompt" % ws)
    sh("echo 'always cut [[fault:cut after=5]]' > %s/b.prompt" % ws)
    write(ws + "/notes.txt", "notes\n")
    wait_finished(ws, "a")
    assert wait_finished(ws, "b")["status"] == "failed"

    r = sh("tar -C %s -cf %s/mount.tar nightly" % (d, tmp_path), check=False)
    assert r.returncode == 2 and b"b.response" in r.stderr and b"Input/output error" in r.stderr
    r = sh("cp %s/a.meta %s/copied.meta" % (ws, ws), check=False)
    assert r.returncode == 1 and b"Permission denied" in r.stderr

    tree = mnt.state + "/tree/openai/us/gpt-4o"
    sh("tar -C %s -czf %s/ai.tgz nightly" % (tree, tmp_path))
    listing = sh("tar -tzf %s/ai.tgz" % tmp_path).stdout.decode().split()
    assert "nightly/a.response" in listing and "nightly/b.error" in listing

    sh("rm -r %s" % ws)
    asked = fake.requests_for("kept question\n")
    sh("tar -xzf %s/ai.tgz -C %s --exclude='*.response' --exclude='*.meta' --exclude='*.error'"
       % (tmp_path, d))
    assert {"a.prompt", "b.prompt", "notes.txt"} <= set(os.listdir(ws))
    assert wait_finished(ws, "a")["status"] == "done"
    assert read_all(ws + "/a.response") == (b"echo: kept question\n", 0)
    assert fake.requests_for("kept question\n") == asked + 1  # asked again
    wait_finished(ws, "b")
