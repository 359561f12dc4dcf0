"""Budgets and the ledger (SPEC §6.4): the worst case of a request is
reserved in every budget on its path at submission, atomically, so however
many writers race, spent + reserved never exceed a budget; the real cost is
charged at the end and the rest released; `.usage` shows each subtree's
figures; the ledger survives a remount and a kill -9 without losing or
doubling a charge, and resumed jobs hold their reservation again.

Prices here are 1 USD per million tokens in and out, so a prompt of L bytes
with max_output_tokens 100 has the worst case (L + 8 + 100) micro-dollars
(SPEC §6.4: prompt bytes plus 8 per message, plus the output bound)."""
import copy
import datetime
import errno
import json
import os
import threading
from decimal import Decimal

import pytest

from conftest import default_config, read_meta, sh, wait_finished, wait_for

MICRO = Decimal("0.000001")
NANO = Decimal("0.000000001")


def priced_config(fake_url):
    config = copy.deepcopy(default_config(fake_url))
    models = config["clouds"]["openai"]["regions"]["us"]["models"]
    models["gpt-4o-mini"] = {"price": {"input_per_mtok": 1, "output_per_mtok": 1}}
    return config


def setpolicy(path, key, value):
    os.setxattr(path, "user.policy." + key, value.encode())


def usage(d):
    with open(os.path.join(d, ".usage")) as f:
        return json.loads(f.read(), parse_float=Decimal)


def worst_case(text):
    return (len(text.encode()) + 8 + 100) * MICRO


def submit(path, text, stages=None):
    """Writes TEXT to PATH: 0 when the close() that submits succeeds, else
    the errno of the first call refused (open, write or close, appended to
    STAGES when given)."""
    stage = "open"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            stage = "write"
            os.write(fd, text.encode())
        finally:
            if stage == "write":
                stage = "close"
            os.close(fd)
    except OSError as e:
        if stages is not None:
            stages.append(stage)
        return e.errno
    return 0


def charged(d, names):
    """The sum of the jobs' cost_usd as the ledger counts them (nano-dollars)."""
    total = Decimal(0)
    for name in names:
        cost = Decimal(repr(read_meta(os.path.join(d, name + ".meta"))["cost_usd"]))
        total += cost.quantize(NANO)
    return total


def month():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m")


@pytest.fixture
def team(mount_factory, fake):
    m = mount_factory(priced_config(fake.url))
    d = os.path.join(m.model("openai", "us", "gpt-4o-mini"), "team")
    os.mkdir(d)
    os.chmod(d, 0o1777)
    setpolicy(d, "max_output_tokens", "100")
    return m, d


def test_usage_without_a_budget_counts_the_subtree(team, fake):
    m, d = team
    text = "count me %d" % id(m)
    assert submit(d + "/a.prompt", text) == 0
    wait_finished(d, "a")
    meta = read_meta(d + "/a.meta")
    # the price's source, and money in fixed decimal for awk and COBOL
    assert meta["price_source"] == "config"
    raw = open(d + "/a.meta").read()
    assert '"cost_usd":%s' % charged(d, ["a"]).normalize() in raw and "e-" not in raw
    here = usage(d)
    assert here["period"] == month()
    assert here["budget_usd"] is None and here["remaining_usd"] is None
    assert "budget_from" not in here and here["budgets"] == []
    assert here["requests"] == {"done": 1, "failed": 0}
    assert here["tokens"] == {"input": meta["usage"]["input_tokens"],
                              "output": meta["usage"]["output_tokens"]}
    assert here["spent_usd"] == charged(d, ["a"]) and here["reserved_usd"] == 0
    assert here["price"] == {"input_per_mtok": 1, "output_per_mtok": 1, "source": "config"}
    # every level above counts it too, with no walk of the subtree
    assert usage(m.path)["requests"]["done"] == 1
    assert usage(m.path + "/openai/us")["spent_usd"] == here["spent_usd"]
    # the sibling model spent nothing; its price comes from the catalog
    other = usage(m.model())
    assert other["requests"] == {"done": 0, "failed": 0} and other["spent_usd"] == 0
    assert other["price"]["source"] == "catalog"
    # read-only, and listed in every directory
    for flags in (os.O_WRONLY, os.O_RDWR | os.O_TRUNC):
        with pytest.raises(OSError) as e:
            os.open(d + "/.usage", flags)
        assert e.value.errno == errno.EACCES
    for call in (lambda: os.unlink(d + "/.usage"),
                 lambda: os.rename(d + "/.usage", d + "/u.txt"),
                 lambda: os.chmod(d + "/.usage", 0o666)):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EPERM
    model = os.path.dirname(d)
    assert os.listdir(model).count(".usage") == 1 and ".usage" in os.listdir(m.path)
    # a workspace's is read by name only: rm -r, cp -r and tar of it work
    assert ".usage" not in os.listdir(d)
    # jq reads it as a cron job would
    r = sh("jq -r .requests.done %s/.usage" % d)
    assert r.stdout == b"1\n"


def test_race_of_200_writers_against_20_worst_cases(team, fake):
    m, d = team
    texts = ["[[fault:gate name=race%d]] race %03d" % (id(m), i) for i in range(200)]
    w = worst_case(texts[0])
    assert all(worst_case(t) == w for t in texts)
    budget = 20 * w
    setpolicy(d, "budget_usd", str(budget))
    results = [None] * 200
    stages = []
    start = threading.Barrier(200)

    def writer(i):
        start.wait()
        results[i] = submit("%s/r%03d.prompt" % (d, i), texts[i], stages)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = [i for i, rc in enumerate(results) if rc == 0]
    assert len(accepted) == 20, results
    assert sorted(set(results)) == [0, errno.EDQUOT]
    # refused at close() while reservations raced, at write() once the
    # room left was too small for the text, at open() once it had none
    # even for an empty prompt
    assert set(stages) <= {"open", "write", "close"}
    # while the 20 are held by the fake, their worst cases fill the budget
    here = usage(d)
    assert (here["budget_usd"], here["spent_usd"], here["reserved_usd"],
            here["remaining_usd"]) == (budget, 0, budget, 0)
    assert here["budget_from"] == d + "/.policy"
    for refused in (i for i, rc in enumerate(results) if rc):
        line = open("%s/r%03d.error" % (d, refused)).readline()
        assert line.startswith(("The prompt was refused by %s/.policy: budget_usd %s for %s, "
                                "spent 0 + reserved " % (d, budget.normalize(), month()),
                                "The prompt was refused: its budgets have room for the worst "
                                "case of a prompt of ")), line
        assert not os.path.exists("%s/r%03d.response" % (d, refused))
    # a later one is refused at open(): what echo reports
    r = sh("echo late > %s/late.prompt" % d, check=False)
    assert r.returncode == 1 and b"Disk quota exceeded" in r.stderr
    assert open(d + "/late.error").readline() == (
        "The prompt was refused by %s/.policy: budget_usd %s for %s, spent 0 + reserved %s, "
        "this request may cost up to %s.\n" % (d, budget.normalize(), month(),
                                               budget.normalize(), (108 * MICRO).normalize()))
    fake.open_gate("race%d" % id(m))
    names = ["r%03d" % i for i in accepted]
    for name in names:
        wait_finished(d, name)
        assert read_meta(d + "/" + name + ".meta")["status"] == "done"
    # exactly the 20 reached the provider
    assert sum(fake.requests_for(t) for t in texts) == 20
    spent = charged(d, names)
    assert 0 < spent < budget
    expect = {"spent_usd": spent, "reserved_usd": 0, "remaining_usd": budget - spent,
              "requests": {"done": 20, "failed": 0}}
    assert wait_for(lambda: usage(d)["reserved_usd"] == 0)
    assert {k: usage(d)[k] for k in expect} == expect
    # a remount keeps the same figures
    assert m.unmount() == 0
    m.start()
    assert {k: usage(d)[k] for k in expect} == expect
    assert usage(m.path)["requests"]["done"] == 20


def test_kill9_with_reservations_outstanding(team, fake):
    m, d = team
    gate = "held%d" % id(m)
    texts = ["[[fault:gate name=%s]] held %d" % (gate, i) for i in range(5)]
    w = worst_case(texts[0])
    setpolicy(d, "budget_usd", "1")
    assert submit(d + "/done.prompt", "before the crash") == 0
    wait_finished(d, "done")
    before = charged(d, ["done"])
    for i, text in enumerate(texts):
        assert submit("%s/h%d.prompt" % (d, i), text) == 0
    assert usage(d)["reserved_usd"] == 5 * w
    m.kill9()
    m.start()
    # the resumed jobs hold their room again; the charge is counted once
    here = usage(d)
    assert (here["spent_usd"], here["reserved_usd"]) == (before, 5 * w)
    assert here["requests"] == {"done": 1, "failed": 0}
    fake.open_gate(gate)
    names = ["h%d" % i for i in range(5)]
    for name in names:
        wait_finished(d, name)
    assert wait_for(lambda: usage(d)["reserved_usd"] == 0)
    spent = before + charged(d, names)
    assert usage(d)["spent_usd"] == spent
    assert usage(d)["requests"] == {"done": 6, "failed": 0}
    # and once more after a crash with nothing outstanding
    m.kill9()
    m.start()
    assert usage(d)["spent_usd"] == spent
    assert usage(d)["requests"] == {"done": 6, "failed": 0}


def test_every_budget_on_the_path_applies(team, fake):
    m, d = team
    text = "[[fault:gate name=path%d]] x" % id(m)
    w = worst_case(text)
    model = os.path.dirname(d)
    setpolicy(model, "budget_usd", str(w))
    setpolicy(model, "budget_period", "day")
    setpolicy(d, "budget_usd", "100")
    assert submit(d + "/one.prompt", text) == 0
    assert submit(d + "/two.prompt", text) == errno.EDQUOT
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    assert ("refused by %s/.policy: budget_usd %s for %s" % (model, w.normalize(), day)
            in open(d + "/two.error").read())
    here = usage(d)
    # this directory's own budget is the one shown, every one is listed
    assert here["budget_from"] == d + "/.policy" and here["budget_usd"] == 100
    assert [b["policy"] for b in here["budgets"]] == [model + "/.policy", d + "/.policy"]
    assert here["budgets"][0]["period"] == day and here["budgets"][0]["remaining_usd"] == 0
    # the model directory itself shows its own, tighter, budget
    assert usage(model)["budget_from"] == model + "/.policy"
    # rm of a running prompt gives its room back
    os.unlink(d + "/one.prompt")
    assert wait_for(lambda: usage(d)["reserved_usd"] == 0)
    fake.open_gate("path%d" % id(m))
    assert submit(d + "/three.prompt", "now it fits") == 0


def test_budget_without_a_known_price_is_edquot(mount_factory, fake):
    m = mount_factory()
    d = m.model("local", "localhost", "llama3.2")
    setpolicy(m.path, "budget_usd", "5")
    text = "priceless %d" % id(m)
    assert submit(d + "/p.prompt", text) == errno.EDQUOT
    assert open(d + "/p.error").readline() == (
        "The prompt was refused by %s/.policy: budget_usd applies, and the price of "
        "local/localhost/llama3.2 is not known.\n" % m.path)
    assert fake.requests_for(text) == 0
    assert usage(d)["price"] is None


def test_a_write_past_the_budgets_room_is_edquot(team, fake):
    m, d = team
    # room for an empty prompt's worst case (108 micro-dollars) and 92
    # bytes more
    setpolicy(d, "budget_usd", "0.0002")
    r = sh("echo %s > %s/long.prompt" % ("x" * 150, d), check=False)
    assert r.returncode == 1 and b"write error: Disk quota exceeded" in r.stderr
    assert open(d + "/long.error").readline() == (
        "The prompt was refused: its budgets have room for the worst case of a prompt of 92 "
        "bytes at most, and it is longer (see .usage).\n")
    assert fake.requests_for("x" * 150 + "\n") == 0
    sh("echo short > %s/short.prompt" % d)
    wait_finished(d, "short")
    assert read_meta(d + "/short.meta")["status"] == "done"



# A budget account is named by its directory's inode number in
# state_dir/tree, which the file system gives again to a directory made
# after the first one is removed: rmdir forgets the account, durably.

def backing(m, d):
    """D (a path under the mount) in state_dir/tree."""
    return os.path.join(m.state, "tree", os.path.relpath(d, m.path))


def journal_records(m):
    """Every record of state_dir/journal's segments, oldest first."""
    records = []
    journal = os.path.join(m.state, "journal")
    for name in sorted(n for n in os.listdir(journal) if n.endswith(".log")):
        with open(os.path.join(journal, name), "rb") as f:
            for line in f.read().split(b"\n"):
                line = line.strip(b"\0")
                if len(line) > 9:
                    records.append(json.loads(line[9:]))
    return records


def snapshot_accounts(m):
    """The inode numbers the last checkpoint wrote in its ledger record."""
    ledgers = [r for r in journal_records(m) if r["t"] == "ledger"]
    assert ledgers, "no ledger record in the journal"
    return {a["ino"] for a in ledgers[-1]["accounts"]}


def kill9_and_checkpoint(m):
    """kill -9, a mount of the same state_dir, and its own checkpoint."""
    seen = open(m.log).read().count("journal: checkpoint done")
    m.kill9()
    m.start()
    m.wait_log("journal: checkpoint done", count=seen + 1)


def new_directory_with_inode(m, parent, ino, through_mount=True, tries=100):
    """Makes directories in PARENT (through the mount, or straight in
    state_dir/tree while the daemon is down) until the file system of
    state_dir gives one the inode number INO; its path under the mount
    (skips the test if none gets it). ext4 gives the lowest free inode
    of the parent's group: a directory freed a moment ago, unless a file
    (a journal segment) took it first."""
    for i in range(tries):
        d = os.path.join(parent, "new%03d" % i)
        os.mkdir(d if through_mount else backing(m, d))
        if os.stat(backing(m, d)).st_ino == ino:
            return d
    pytest.skip("the file system of state_dir gave inode %d to none of %d new directories; "
                "a directory inheriting an account cannot be shown here" % (ino, tries))


def spend_and_remove(m, d, name):
    """A workspace NAME in D with a budget and a job done in it, emptied and
    removed: (its inode number in state_dir/tree, what D's .usage said)."""
    ws = os.path.join(d, name)
    os.mkdir(ws)
    setpolicy(ws, "budget_usd", "0.001")
    assert submit(ws + "/a.prompt", "spent in %s %d" % (name, id(m))) == 0
    wait_finished(ws, "a")
    spent = charged(ws, ["a"])
    assert usage(ws)["spent_usd"] == spent > 0
    ino = os.stat(backing(m, ws)).st_ino
    above = {k: usage(d)[k] for k in ("spent_usd", "requests", "tokens")}
    assert above["spent_usd"] == spent
    os.unlink(ws + "/a.prompt")
    os.unlink(ws + "/.policy")
    os.rmdir(ws)
    # the money was spent: the directories above still count it
    assert {k: usage(d)[k] for k in above} == above
    return ino, above


def test_removed_workspace_account_stays_gone_after_kill9(team, fake):
    m, d = team
    ino, above = spend_and_remove(m, d, "gone")
    # said in the journal before rmdir returned
    assert {"t": "forget", "acct": ino} in journal_records(m)
    kill9_and_checkpoint(m)
    assert {k: usage(d)[k] for k in above} == above
    # the mount's own checkpoint wrote the parent's account, not the
    # removed directory's (which a replay bringing it back would write)
    accounts = snapshot_accounts(m)
    assert os.stat(backing(m, d)).st_ino in accounts
    assert ino not in accounts


def assert_spent_nothing(d):
    here = usage(d)
    assert (here["spent_usd"], here["reserved_usd"]) == (0, 0), here
    assert here["requests"] == {"done": 0, "failed": 0}, here
    assert here["tokens"] == {"input": 0, "output": 0}, here
    # a budget set on it has its whole room
    setpolicy(d, "budget_usd", "0.001")
    assert usage(d)["remaining_usd"] == Decimal("0.001")


def test_new_directory_with_a_removed_ones_inode_starts_from_nothing(team, fake):
    m, d = team
    ino, above = spend_and_remove(m, d, "old")
    assert_spent_nothing(new_directory_with_inode(m, d, ino))
    assert {k: usage(d)[k] for k in above} == above


def test_removed_directory_account_does_not_come_back_after_kill9(team, fake):
    m, d = team
    ino, above = spend_and_remove(m, d, "old")
    m.kill9()
    # made while the daemon is down, so that no file of its restart takes
    # the inode first; the mount then finds the tree as it is
    new = new_directory_with_inode(m, d, ino, through_mount=False)
    m.start()
    assert_spent_nothing(new)
    assert {k: usage(d)[k] for k in above} == above


def test_directory_replaced_by_a_rename_is_forgotten(team, fake):
    m, d = team
    ws = d + "/old"
    os.mkdir(ws)
    assert submit(ws + "/a.prompt", "spent before a rename %d" % id(m)) == 0
    wait_finished(ws, "a")
    ino = os.stat(backing(m, ws)).st_ino
    above = {k: usage(d)[k] for k in ("spent_usd", "requests", "tokens")}
    os.unlink(ws + "/a.prompt")
    os.mkdir(d + "/other")
    # rename(2) over an empty directory removes it
    os.rename(d + "/other", ws)
    assert os.stat(backing(m, ws)).st_ino != ino
    assert {"t": "forget", "acct": ino} in journal_records(m)
    assert {k: usage(d)[k] for k in above} == above
    kill9_and_checkpoint(m)
    assert ino not in snapshot_accounts(m)
    assert {k: usage(d)[k] for k in above} == above


def test_job_moved_out_of_a_removed_directory_does_not_charge_it(team, fake):
    m, d = team
    gate = "outlive%d" % id(m)
    ws = d + "/ws"
    os.makedirs(ws + "/sub")
    text = "[[fault:gate name=%s]] outlives its workspace" % gate
    assert submit(ws + "/sub/j.prompt", text) == 0
    w = worst_case(text)
    assert usage(ws)["reserved_usd"] == w
    ino = os.stat(backing(m, ws)).st_ino
    # the job's directory moves out; the one it also reserved in goes
    os.rename(ws + "/sub", d + "/sub")
    os.rmdir(ws)
    assert {"t": "forget", "acct": ino} in journal_records(m)
    assert usage(d)["reserved_usd"] == w
    fake.open_gate(gate)
    wait_finished(d + "/sub", "j")
    spent = charged(d + "/sub", ["j"])
    assert wait_for(lambda: usage(d)["reserved_usd"] == 0)
    assert usage(d)["spent_usd"] == usage(d + "/sub")["spent_usd"] == spent > 0
    # charged above and in its own directory, not to the removed one
    ends = [r for r in journal_records(m) if r["t"] == "end" and r.get("charge")]
    accts = ends[-1]["charge"]["acct"]
    assert os.stat(backing(m, d)).st_ino in accts and ino not in accts
    kill9_and_checkpoint(m)
    assert usage(d)["spent_usd"] == usage(d + "/sub")["spent_usd"] == spent
    assert ino not in snapshot_accounts(m)
