#!/usr/bin/python3
"""Helpers of scale.sh (standard library only).

Every sub-command prints one line of space-separated key=value pairs (values
never hold spaces), which scale.sh reads with its kv function.

  scale.py populate TEMPLATE WSDIR JOBS [EXTRA]
        writes JOBS finished jobs jN.prompt/.response/.meta into WSDIR (a
        workspace directory inside state_dir/tree), shaped, owned and moded
        like the real job whose .meta is TEMPLATE; EXTRA names one more plain
        file to add (to make a directory of an exact entry count)
  scale.py waitstat PATH READY TIMEOUT
        creates READY once started, then stat()s PATH every millisecond;
        prints the wall-clock time of the first stat that succeeded
  scale.py status PID
        threads, VmRSS and VmHWM (MiB) of PID
  scale.py readers MODELDIR WS PROMPTS PER GATE PORT PID FAKEPID READERBIN
        the 10,000-readers run: submits PROMPTS gated prompts in MODELDIR/WS,
        starts READERBIN (scale_readers.c: PROMPTS*PER reader threads, PER
        on each .response), waits until all sleep in the FUSE driver, opens
        the gate, collects READERBIN's check of every answer; samples the
        daemon PID's thread count throughout
"""
import collections
import hashlib
import json
import math
import os
import random
import resource
import subprocess
import sys
import threading
import time
import urllib.request


def out(**kv):
    print(" ".join("%s=%s" % (k, str(v).replace(" ", "_")) for k, v in kv.items()), flush=True)


# ---------------------------------------------------------------- populate

def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def cmd_populate(template, wsdir, jobs, extra=None):
    """The daemon's own files for a finished job, written directly: what a
    state_dir holds after JOBS jobs ran there. Only the text varies; the
    .meta keeps the template's keys, their order and its compact form."""
    jobs = int(jobs)
    with open(template) as f:
        raw = f.read()
    shape = json.loads(raw)
    if shape.get("status") != "done":
        sys.exit("scale.py: template %s is not a done job" % template)
    tail = raw[len(raw.rstrip()):]  # the daemon ends a .meta with "\n"
    tdir = os.path.dirname(template)
    base = os.path.basename(template)[:-len(".meta")]
    st_meta = os.stat(template)
    st_prompt = os.stat(os.path.join(tdir, base + ".prompt"))
    st_resp = os.stat(os.path.join(tdir, base + ".response"))
    st_dir = os.stat(tdir)
    os.makedirs(wsdir, exist_ok=True)
    os.chown(wsdir, st_dir.st_uid, st_dir.st_gid)
    os.chmod(wsdir, st_dir.st_mode & 0o7777)
    rng = random.Random(wsdir)
    alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    ws = os.path.basename(wsdir)
    t = time.time() - 86400  # a day of history, one job every few seconds

    def put(name, data, st):
        fd = os.open(os.path.join(wsdir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fchown(fd, st.st_uid, st.st_gid)
            os.fchmod(fd, st.st_mode & 0o7777)
        finally:
            os.close(fd)

    t0 = time.time()
    for i in range(1, jobs + 1):
        prompt = ("scale job %s/%d: summarise the quarterly report in three lines\n"
                  % (ws, i)).encode()
        answer = b"echo: " + prompt  # the fake cloud's answer rule
        meta = dict(shape)
        started = t + rng.uniform(0, 0.01)
        ms = rng.randint(300, 4000)
        meta["submitted"] = iso(t)
        meta["prompt_sha256"] = hashlib.sha256(prompt).hexdigest()
        if "started" in meta:
            meta["started"] = iso(started)
        if "request_id" in meta:
            meta["request_id"] = "chatcmpl-" + "".join(rng.choice(alnum) for _ in range(29))
        if "usage" in meta:
            meta["usage"] = {"input_tokens": math.ceil(len(prompt) / 4),
                             "output_tokens": math.ceil(len(answer) / 4)}
        if meta.get("attempts"):
            attempt = dict(meta["attempts"][0])
            attempt["ms"] = ms
            if "ttfb_ms" in attempt:
                attempt["ttfb_ms"] = rng.randint(100, ms)
            meta["attempts"] = [attempt]
        if "finished" in meta:
            meta["finished"] = iso(started + ms / 1000.0)
        text = json.dumps(meta, separators=(",", ":"), ensure_ascii=False) + tail
        put("j%d.prompt" % i, prompt, st_prompt)
        put("j%d.response" % i, answer, st_resp)
        put("j%d.meta" % i, text.encode(), st_meta)
        t += rng.uniform(0.5, 1.5)
    if extra:
        put(extra, b"ordinary notes kept beside the jobs\n", st_prompt)
    out(jobs=jobs, entries=len(os.listdir(wsdir)), seconds="%.1f" % (time.time() - t0))


# ---------------------------------------------------------------- waitstat

def cmd_waitstat(path, ready, timeout):
    """Polls from before the daemon starts (scale.sh waits for READY, then
    takes its start time and launches the daemon), so the poller's own
    start-up is not counted. Before the mount the path does not exist
    (ENOENT at once); once mounted, a stat waits in the kernel until the
    daemon serves requests."""
    deadline = time.time() + float(timeout)
    tries = 0
    open(ready, "w").close()
    while time.time() < deadline:
        tries += 1
        try:
            os.stat(path)
            out(t="%.6f" % time.time(), tries=tries)
            return
        except OSError:
            time.sleep(0.001)
    out(t="timeout", tries=tries)


# ---------------------------------------------------------------- process state

def threads(pid):
    try:
        return len(os.listdir("/proc/%s/task" % pid))
    except OSError:
        return 0


def thread_names(pid, tids=None):
    """The threads TIDS of PID (default: all now) grouped by name and by
    where they sleep (wchan: e.g. FUSE workers waiting for a request in
    fuse_dev_do_read), most numerous first; one that ended meanwhile
    counts as "(ended)"."""
    names = collections.Counter()
    if tids is None:
        try:
            tids = os.listdir("/proc/%s/task" % pid)
        except OSError:
            return "-"
    for tid in tids:
        try:
            with open("/proc/%s/task/%s/comm" % (pid, tid)) as f:
                comm = f.read().strip()
            with open("/proc/%s/task/%s/wchan" % (pid, tid)) as f:
                wchan = f.read().strip() or "running"
            names["%s@%s" % (comm, wchan)] += 1
        except OSError:
            names["(ended)"] += 1
    return ",".join("%s:%d" % kv for kv in names.most_common()) or "-"


def mib(status, key):
    try:
        return "%.1f" % (int(status[key].split()[0]) / 1024.0)
    except (KeyError, ValueError, IndexError):
        return "?"


def proc_status(pid):
    st = {}
    try:
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                st[k] = v.strip()
    except OSError:
        pass
    return st


def cmd_status(pid):
    st = proc_status(pid)
    out(threads=threads(pid), rss_mib=mib(st, "VmRSS"), hwm_mib=mib(st, "VmHWM"))


# ---------------------------------------------------------------- readers

class Sampler(threading.Thread):
    """The daemon's thread count every 20 ms; keeps the highest and the
    thread names at that moment."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.peak_names = "-"
        self.running = True

    def run(self):
        while self.running:
            try:
                tids = os.listdir("/proc/%s/task" % self.pid)
            except OSError:
                tids = []
            if len(tids) > self.peak:
                self.peak = len(tids)
                self.peak_names = thread_names(self.pid, tids)
            time.sleep(0.02)


def blocked_in_fuse(pid):
    """(threads of PID other than its main one, how many of them sleep in
    the FUSE driver waiting for the daemon's answer to a request)."""
    n = blocked = 0
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return 0, 0
    for tid in tids:
        if tid == str(pid):
            continue
        n += 1
        try:
            with open("/proc/%d/task/%s/wchan" % (pid, tid)) as f:
                if f.read().strip() == "request_wait_answer":
                    blocked += 1
        except OSError:
            pass
    return n, blocked


TICK = os.sysconf("SC_CLK_TCK")


def cpu_busy():
    """Seconds of CPU time the whole machine spent busy (all cores)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: idle and iowait are not busy
    return (sum(v[:8]) - v[3] - v[4]) / TICK


def cpu_of(pid):
    """Seconds of CPU time PID used so far (user + system), 0 if gone."""
    try:
        with open("/proc/%s/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def cmd_readers(modeldir, ws, prompts, per, gate, port, pid, fake_pid, reader_bin):
    """PROMPTS gated prompts, then PROMPTS*PER readers (READER_BIN, the C
    threads of scale_readers.c); keep their texts in step with it."""
    prompts, per = int(prompts), int(per)
    wsdir = os.path.join(modeldir, ws)

    sampler = Sampler(pid)
    sampler.start()
    idle_threads = threads(pid)
    os.mkdir(wsdir)

    def text(i):
        return ("reader prompt %d [[fault:gate name=%s]]\n" % (i, gate)).encode()

    # submission: a handful of writers, each close() waits for the fsync
    t0 = time.time()
    errors = []

    def write(lo):
        for i in range(lo, prompts, 16):
            try:
                fd = os.open(os.path.join(wsdir, "r%d.prompt" % i),
                             os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    os.write(fd, text(i))
                finally:
                    os.close(fd)
            except OSError as e:
                errors.append("write_r%d:%s" % (i, e.strerror))

    writers = [threading.Thread(target=write, args=(k,)) for k in range(16)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    t_submit = time.time() - t0

    t1 = time.time()
    proc = subprocess.Popen([reader_bin, wsdir, str(prompts), str(per), gate],
                            stdout=subprocess.PIPE, text=True)
    first = dict(kv.split("=", 1) for kv in proc.stdout.readline().split())
    t_started = time.time() - t1
    started = int(first.get("started", 0))

    # wait until every reader sleeps in read(): all of them, or the count
    # stopped growing for 5 s
    blocked, best, stable_since = 0, 0, time.time()
    deadline = time.time() + 90
    while time.time() < deadline:
        _, blocked = blocked_in_fuse(proc.pid)
        if blocked > best:
            best, stable_since = blocked, time.time()
        if blocked >= started or time.time() - stable_since > 5:
            break
        time.sleep(0.2)
    t_block = time.time() - t1
    at_block = threads(pid)
    names_at_block = thread_names(pid)
    st = proc_status(pid)
    rss_block, hwm_block = mib(st, "VmRSS"), mib(st, "VmHWM")
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s/_stats" % port, timeout=10) as r:
            fake_inflight = json.load(r).get("inflight", "?")
    except OSError:
        fake_inflight = "?"

    # let every answer go, then collect the readers' verdict; CPU time of
    # this phase by who spent it, to tell a slow daemon from a busy machine
    busy0, d0, f0 = cpu_busy(), cpu_of(pid), cpu_of(fake_pid)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t2 = time.time()
    with urllib.request.urlopen("http://127.0.0.1:%s/_open?gate=%s" % (port, gate),
                                timeout=10) as r:
        json.load(r)
    try:
        last, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        last, _ = proc.communicate()
        last = "ok=0 mismatches=? errors=? first_bad=readers_still_blocked_after_240_s"
    t_answer = time.time() - t2
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = cpu_busy() - busy0
    d_cpu, f_cpu = cpu_of(pid) - d0, cpu_of(fake_pid) - f0
    r_cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    sampler.running = False
    sampler.join()
    res = dict(kv.split("=", 1) for kv in last.split())
    st = proc_status(pid)
    out(readers=started, start_errors=first.get("start_errors", "?"), responses=prompts,
        write_errors=len(errors), blocked=blocked, idle_threads=idle_threads,
        threads_blocked=at_block, names_blocked=names_at_block,
        peak_threads=sampler.peak, peak_names=sampler.peak_names,
        fake_inflight=fake_inflight, rss_blocked=rss_block, hwm_blocked=hwm_block,
        rss_end=mib(st, "VmRSS"), hwm_end=mib(st, "VmHWM"),
        ok=res.get("ok", "?"), mismatches=res.get("mismatches", "?"),
        errors=res.get("errors", "?"), first_bad=res.get("first_bad", "?"),
        submit_s="%.2f" % t_submit, start_s="%.2f" % t_started,
        block_s="%.2f" % t_block, answer_s="%.2f" % t_answer,
        cpu_busy="%.1f" % busy, cpu_readers="%.1f" % r_cpu, cpu_daemon="%.1f" % d_cpu,
        cpu_fake="%.1f" % f_cpu, cpu_others="%.1f" % max(0.0, busy - r_cpu - d_cpu - f_cpu),
        first_write_error=(errors[0] if errors else "-"))


COMMANDS = {
    "populate": cmd_populate, "waitstat": cmd_waitstat, "status": cmd_status,
    "readers": cmd_readers,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
