#!/usr/bin/python3
"""Measuring and checking helpers of bench.sh (standard library only).

Every sub-command prints one line of space-separated key=value pairs, so the
shell side can read them with `read` or `eval`-free parsing.

  bench.py answers OUTDIR N          compare OUTDIR/1..N with "echo: q I\\n"
  bench.py metas DIR N               check DIR/p1..pN.meta: done, one ok attempt
  bench.py pending DIR               count DIR/*.meta still queued or running
  bench.py snapshot PID PGRP         daemon threads + where PGRP's cat readers wait
  bench.py watch PID PGRP FLAG       sample the above until FILE FLAG is gone
  bench.py status PID                threads, VmHWM and VmRSS (MiB) of PID
  bench.py fakestats PORT            the fake cloud's counters
  bench.py fakereset PORT            zero the fake cloud's counters
  bench.py buildtype BUILDDIR        meson build type of BUILDDIR
"""
import collections
import glob
import hashlib
import json
import os
import sys
import time
import urllib.request


def expected(i):
    return ("echo: q %d\n" % i).encode()


def cmd_answers(outdir, n):
    n = int(n)
    bad = missing = empty = 0
    first = ""
    for i in range(1, n + 1):
        path = os.path.join(outdir, str(i))
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            missing += 1
            bad += 1
            first = first or "%d:missing" % i
            continue
        if data != expected(i):
            bad += 1
            empty += not data
            first = first or "%d:%r" % (i, data[:60])
    # an empty file is a reader that got end-of-file before any answer
    print("mismatches=%d empty=%d missing=%d first_bad=%s"
          % (bad, empty, missing, first.replace(" ", "_") or "-"))


def read_meta(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def cmd_metas(d, n):
    n = int(n)
    bad = 0
    statuses = collections.Counter()
    outcomes = collections.Counter()
    multi = 0
    first = ""
    for i in range(1, n + 1):
        m = read_meta(os.path.join(d, "p%d.meta" % i))
        if m is None:
            bad += 1
            statuses["unreadable"] += 1
            first = first or "p%d:unreadable" % i
            continue
        statuses[m.get("status")] += 1
        attempts = m.get("attempts") or []
        for a in attempts:
            outcomes[a.get("outcome")] += 1
        if len(attempts) > 1:
            multi += 1
        ok = (m.get("status") == "done" and len(attempts) == 1
              and attempts[0].get("outcome") == "ok")
        if not ok:
            bad += 1
            if not first:
                first = "p%d:%s:%s" % (i, m.get("status"),
                                       ",".join(str(a.get("outcome")) for a in attempts))
    fmt = lambda c: ",".join("%s:%d" % kv for kv in sorted(c.items(), key=str)) or "-"
    print("bad=%d multi_attempt=%d statuses=%s outcomes=%s first_bad=%s"
          % (bad, multi, fmt(statuses), fmt(outcomes), first or "-"))


def cmd_pending(d):
    counts = collections.Counter()
    for path in glob.glob(os.path.join(d, "*.meta")):
        m = read_meta(path)
        counts[m.get("status") if m else "unreadable"] += 1
    print("queued=%d running=%d done=%d other=%d total=%d" % (
        counts["queued"], counts["running"], counts["done"],
        sum(counts.values()) - counts["queued"] - counts["running"] - counts["done"],
        sum(counts.values())))


def threads(pid):
    try:
        return len(os.listdir("/proc/%s/task" % pid))
    except OSError:
        return 0


def proc_status(pid):
    out = {}
    try:
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
    return out


def kib_to_mib(v):
    try:
        return "%.1f" % (int(v.split()[0]) / 1024.0)
    except (ValueError, IndexError, AttributeError):
        return "?"


def cmd_status(pid):
    st = proc_status(pid)
    print("threads=%d hwm_mib=%s rss_mib=%s" % (
        threads(pid), kib_to_mib(st.get("VmHWM")), kib_to_mib(st.get("VmRSS"))))


def readers_of(pgrp):
    """Where the `cat` processes of process group PGRP sleep in the kernel."""
    where = collections.Counter()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
            # comm may hold spaces; the fields after it start past ')'
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            if comm != "cat" or fields[2] != str(pgrp):
                continue
            with open("/proc/%s/wchan" % entry) as f:
                where[f.read().strip() or "running"] += 1
        except (OSError, ValueError, IndexError):
            continue
    return where


def describe(n, where):
    desc = ",".join("%s:%d" % kv for kv in where.most_common()) or "-"
    return "threads=%d readers=%d wchan=%s" % (n, sum(where.values()), desc)


def cmd_snapshot(pid, pgrp):
    print(describe(threads(pid), readers_of(pgrp)))


def cmd_watch(pid, pgrp, flag):
    """Samples until FLAG disappears; prints the highest thread count seen
    and the sample with the most readers blocked in the FUSE driver."""
    max_threads = 0
    best = None
    while os.path.exists(flag):
        n = threads(pid)
        max_threads = max(max_threads, n)
        where = readers_of(pgrp)
        blocked = where.get("request_wait_answer", 0)
        if best is None or blocked > best[0]:
            best = (blocked, n, where)
        time.sleep(0.1)
    best = best or (0, 0, collections.Counter())
    print("max_threads=%d blocked=%d %s" % (max_threads, best[0], describe(best[1], best[2])))


def fake_get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%s%s" % (port, path), timeout=10) as r:
        return json.load(r)


def cmd_fakestats(port, n=None):
    try:
        s = fake_get(port, "/_stats")
    except OSError as e:
        print("requests=? max_inflight=? inflight=? repeated_prompts=? error=%s"
              % str(e).replace(" ", "_"))
        return
    line = "requests=%d max_inflight=%d inflight=%d" % (
        s.get("requests", 0), s.get("max_inflight", 0), s.get("inflight", 0))
    if n is not None:
        # prompts of the form "q I\n" that reached the backend more than once
        by_prompt = s.get("by_prompt", {})
        repeated = 0
        for i in range(1, int(n) + 1):
            h = hashlib.sha256(("q %d\n" % i).encode()).hexdigest()
            if by_prompt.get(h, 0) > 1:
                repeated += 1
        line += " repeated_prompts=%d" % repeated
    print(line)


def cmd_fakereset(port):
    try:
        fake_get(port, "/_reset")
        print("ok=1")
    except OSError as e:
        print("ok=0 error=%s" % str(e).replace(" ", "_"))


def cmd_buildtype(builddir):
    try:
        with open(os.path.join(builddir, "meson-info", "intro-buildoptions.json")) as f:
            opts = {o["name"]: o["value"] for o in json.load(f)}
        print("%s (sanitize=%s)" % (opts.get("buildtype"), opts.get("b_sanitize")))
    except (OSError, ValueError, KeyError):
        print("unknown")


COMMANDS = {
    "answers": cmd_answers, "metas": cmd_metas, "pending": cmd_pending,
    "snapshot": cmd_snapshot, "watch": cmd_watch, "status": cmd_status, "fakestats": cmd_fakestats,
    "fakereset": cmd_fakereset, "buildtype": cmd_buildtype,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
