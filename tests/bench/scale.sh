#!/bin/bash
# promptfs scale figures: mount time with many finished jobs, ls of big
# directories, the daemon's memory, and 10,000 readers blocked at once.
# Not part of the test suite (about 2 minutes, 1.5 GiB of disk and 330,000
# inodes for the default 100,000 jobs); run it by hand, as root:
#
#   ./tests/bench/scale.sh [--build DIR] [--keep] [--jobs N] [--ls-only]
#
# --jobs N: finished jobs written into state_dir (default 100000).
# --ls-only: only the cold mount, ls and memory figures, with 10 jobs
#   besides the two 10,000-entry directories unless --jobs says otherwise.
# It works in a temporary directory under /var/tmp (on disk, never tmpfs),
# starts its own fake cloud and daemon, removes everything it started on
# exit (also on Ctrl-C or error), prints a table of figure, measured,
# target, PASS/FAIL and exits 1 if any figure failed.
# --keep leaves the temporary directory (logs, state) in place.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$ROOT/build
KEEP=0
JOBS=
LS_ONLY=0
while [ $# -gt 0 ]; do
	case $1 in
	--build) BUILD=$(cd "${2:?--build needs a directory}" && pwd) || exit 2; shift 2 ;;
	--build=*) BUILD=$(cd "${1#--build=}" && pwd) || exit 2; shift ;;
	--jobs) JOBS=${2:?--jobs needs a number}; shift 2 ;;
	--jobs=*) JOBS=${1#--jobs=}; shift ;;
	--keep) KEEP=1; shift ;;
	--ls-only) LS_ONLY=1; shift ;;
	-h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "scale.sh: unknown argument: $1" >&2; exit 2 ;;
	esac
done

if [ -z "$JOBS" ]; then
	JOBS=100000
	[ "$LS_ONLY" = 1 ] && JOBS=10
fi

PROMPTFS=$BUILD/fs/promptfs
PY=/usr/bin/python3
HELPER=$ROOT/tests/bench/scale.py
READERS_SRC=$ROOT/tests/bench/scale_readers.c
FAKECLOUD=$ROOT/tests/fakecloud/fakecloud.py
MODEL_DIR=local/localhost/llama3.2
CONFIG_FMT='{"clouds":{"local":{"provider":"openai","regions":{"localhost":{"geo":"local","endpoint":"http://127.0.0.1:%s/v1","models":{"llama3.2":{}}}}}}}'
WORKSPACES=10          # the jobs are spread over ws00..ws09
TEN_K_JOBS=3333        # 3 files each + one note = a directory of 10,000 entries
PROMPTS=1000           # distinct gated prompts of the readers run
PER_PROMPT=10          # readers of each of their .response files
# targets
MOUNT_MAX=1            # s
LS_MAX=0.2             # s
RSS_MAX=64             # MiB
THREADS_MAX=100

die() { echo "scale.sh: $*" >&2; exit 2; }
case $JOBS in '' | *[!0-9]*) die "--jobs needs a number" ;; esac
[ "$JOBS" -ge "$WORKSPACES" ] || die "--jobs must be at least $WORKSPACES"
[ "$(id -u)" = 0 ] || die "run as root (it mounts FUSE file systems and drops caches)"
[ -x "$PROMPTFS" ] || die "no daemon at $PROMPTFS (ninja -C $BUILD)"
[ -x "$PY" ] || die "$PY is missing"
for tool in fusermount3 mountpoint findmnt cc; do
	command -v $tool >/dev/null || die "$tool is missing"
done

# Each reader holds a descriptor in the client and one in the daemon; both
# raise their soft limit, neither can pass the hard one (root in a container
# may not raise it either).
hard=$(ulimit -Hn)
if [ "$LS_ONLY" = 0 ] && [ "$hard" != unlimited ] && [ "$hard" -lt $((PROMPTS * PER_PROMPT + 1024)) ]; then
	ulimit -Hn $((PROMPTS * PER_PROMPT + 1024)) 2>/dev/null ||
		die "the open files limit ($hard) is too low for $((PROMPTS * PER_PROMPT)) readers"
fi

# What this script started, for the cleanup; nothing starts before WORK exists.
WORK='' MNT='' DPID='' FAKE_PID='' POLLER=''

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
	local rc=$? _
	trap - EXIT INT TERM
	[ -n "$WORK" ] || exit "$rc"
	[ -n "$POLLER" ] && kill "$POLLER" 2>/dev/null
	if mountpoint -q "$MNT" 2>/dev/null; then
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null
	fi
	if [ -n "$DPID" ]; then
		for _ in $(seq 50); do
			kill -0 "$DPID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$DPID" 2>/dev/null
	fi
	[ -n "$FAKE_PID" ] && kill -TERM "$FAKE_PID" 2>/dev/null
	wait 2>/dev/null
	mountpoint -q "$MNT" 2>/dev/null && fusermount3 -uz "$MNT" 2>/dev/null
	if [ "$KEEP" = 1 ]; then
		echo "work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "scale.sh: interrupted" >&2; exit 130' INT TERM

# On disk: /tmp may be tmpfs, and the point is the cost of reading a real
# file system (cold cache) at mount and at ls.
WORK=$(mktemp -d /var/tmp/promptfs-scale.XXXXXX) || die "mktemp failed"
MNT=$WORK/mnt
chmod 755 "$WORK"
FSTYPE=$(findmnt -n -o FSTYPE -T "$WORK")
STATE=$WORK/state
CONFIG=$WORK/clouds.json
LOG=$WORK/promptfs.log
# timeout=600: the readers run holds up to 64 requests at the fake's gate
# for as long as the 10,000 readers take to block; a 120 s attempt timeout
# would retry them meanwhile (it changes nothing else measured here)
DAEMON_OPTS="state_dir=$STATE,timeout=600"
mkdir -p "$MNT"
READERS_BIN=$WORK/scale_readers
cc -O2 -Wall -pthread -o "$READERS_BIN" "$READERS_SRC" || die "cannot build $READERS_SRC"

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# kv LINE KEY: the value of KEY in a "k=v k=v" line of scale.py
kv() { local w; for w in $1; do [ "${w%%=*}" = "$2" ] && { echo "${w#*=}"; return; }; done; echo "?"; }
below() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 < b + 0) }'; }
progress() { echo "  .. $*" >&2; }
group() { printf "%'d" "$1" 2>/dev/null || echo "$1"; }

# ---------------------------------------------------------------- processes

start_fake() {
	local _
	"$PY" "$FAKECLOUD" --host 127.0.0.1 --port 0 --port-file "$WORK/fake.port" \
		--latency 0 >/dev/null 2>"$WORK/fake.stderr" &
	FAKE_PID=$!
	for _ in $(seq 300); do
		[ -s "$WORK/fake.port" ] && break
		kill -0 "$FAKE_PID" 2>/dev/null || die "fake cloud exited: $(cat "$WORK/fake.stderr")"
		sleep 0.05
	done
	[ -s "$WORK/fake.port" ] || die "fake cloud did not start"
	FAKE_PORT=$(cat "$WORK/fake.port")
	# shellcheck disable=SC2059 # the format is the config's template
	printf "$CONFIG_FMT\n" "$FAKE_PORT" >"$CONFIG"
}

# Starts the daemon and sets MOUNT_S to the seconds from its start to the
# first stat of PATH (in the mount) that succeeds. The poller runs first,
# so its own start-up is not counted; it stats every millisecond.
MOUNT_S=
mount_timed() { # PATH
	local t0 res t
	rm -f "$WORK/ready"
	"$PY" "$HELPER" waitstat "$1" "$WORK/ready" 300 >"$WORK/waitstat" &
	POLLER=$!
	until [ -e "$WORK/ready" ]; do
		kill -0 "$POLLER" 2>/dev/null || die "the stat poller did not start"
		sleep 0.005
	done
	t0=$(now)
	"$PROMPTFS" -f -o "$DAEMON_OPTS" "$CONFIG" "$MNT" >>"$LOG" 2>&1 &
	DPID=$!
	while kill -0 "$POLLER" 2>/dev/null; do
		if ! kill -0 "$DPID" 2>/dev/null; then
			kill "$POLLER" 2>/dev/null
			die "promptfs exited: $(tail -5 "$LOG")"
		fi
		sleep 0.02
	done
	wait "$POLLER"
	POLLER=
	res=$(cat "$WORK/waitstat")
	t=$(kv "$res" t)
	if [ "$t" = timeout ] || [ "$t" = "?" ]; then
		die "no stat of $1 answered within 300 s ($res)"
	fi
	MOUNT_S=$(elapsed "$t0" "$t")
}

DCODE='' DSTOP=''
stop_daemon() { # sets DCODE to the daemon's exit status, DSTOP to seconds taken
	local _ t0
	t0=$(now)
	for _ in $(seq 50); do
		fusermount3 -u "$MNT" 2>/dev/null && break
		mountpoint -q "$MNT" || break
		sleep 0.1
	done
	mountpoint -q "$MNT" && fusermount3 -uz "$MNT"
	for _ in $(seq 300); do
		kill -0 "$DPID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$DPID" 2>/dev/null; then
		kill -KILL "$DPID"
		wait "$DPID" 2>/dev/null
		DCODE="hung, killed"
	else
		wait "$DPID"
		DCODE=$?
	fi
	DPID=
	DSTOP=$(elapsed "$t0" "$(now)")
}

# ---------------------------------------------------------------- reporting

ROWS=()      # "figure|measured|target|verdict"
NOTES=()     # "what|value" lines under the table
FAILED=0
judge() { # FIGURE MEASURED TARGET-TEXT OK(0/1)
	local v=PASS
	[ "$4" = 0 ] || { v=FAIL; FAILED=1; }
	ROWS+=("$1|$2|$3|$v")
}
info() { ROWS+=("$1|$2|$3|info"); }
note() { NOTES+=("$1|$2"); }
ok_below() { below "$1" "$2"; echo $?; }

# ---------------------------------------------------------------- 0: a real job

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(now)
progress "work directory $WORK ($FSTYPE)"
case $FSTYPE in tmpfs | ramfs) die "$WORK is on $FSTYPE, not on disk" ;; esac
# 3 files of one block each per job, plus room; and an inode per file
need_kib=$(((JOBS + 10000) * 16))
need_inodes=$(((JOBS + 10000) * 3 + 1000))
[ "$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')" -gt "$need_kib" ] ||
	die "less than $((need_kib / 1024)) MiB free under /var/tmp"
free_inodes=$(df -Pi "$WORK" | awk 'NR == 2 { print $4 }')
case $free_inodes in
'' | *[!0-9]*) ;; # file systems without an inode count (btrfs) say "-"
*) [ "$free_inodes" -gt "$need_inodes" ] || die "fewer than $need_inodes free inodes under /var/tmp" ;;
esac

start_fake
D=$MNT/$MODEL_DIR
TREE=$STATE/tree/$MODEL_DIR

# The first mount on an empty state_dir lets the daemon create whatever
# bookkeeping it keeps; one real job gives the shape of a finished job's
# files and checks the fake's answer rule the readers run relies on.
progress "first mount on an empty state_dir, one real job"
mount_timed "$D"
mkdir "$D/probe" || die "mkdir in the mount failed"
echo "scale probe" >"$D/probe/j1.prompt" || die "submitting the probe job failed"
PROBE_ANSWER=$(cat "$D/probe/j1.response")
[ "$PROBE_ANSWER" = "echo: scale probe" ] ||
	die "the fake's answer rule is not 'echo: <prompt>': got '$PROBE_ANSWER'"
grep -q '"status":"done"' "$D/probe/j1.meta" || die "the probe job is not done: $(cat "$D/probe/j1.meta")"
stop_daemon
[ "$DCODE" = 0 ] || die "the first daemon exited $DCODE on unmount: $(tail -5 "$LOG")"
note "state_dir after the first mount" "$(find "$STATE" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort | tr '\n' ' ')"
note "template .meta (a real job)" "$(cat "$TREE/probe/j1.meta")"

# ---------------------------------------------------------------- 1: populate

progress "writing $(group "$JOBS") finished jobs into $TREE (+ 2 x $TEN_K_JOBS)"
T_POP=$(now)
TEMPLATE=$TREE/probe/j1.meta
per=$((JOBS / WORKSPACES))
spare=$((JOBS % WORKSPACES))
specs=()
for ((w = 0; w < WORKSPACES; w++)); do
	n=$per
	[ $w -lt $spare ] && n=$((per + 1))
	specs+=("$(printf 'ws%02d' $w) $n")
done
# two directories of exactly 10,000 entries, one for ls -f, one for ls -l,
# so each is timed on its first listing after the mount
specs+=("ten-f $TEN_K_JOBS notes.txt" "ten-l $TEN_K_JOBS notes.txt")
# two writers at a time, one per core; sh -c's own $0.. are the arguments
# shellcheck disable=SC2016
printf '%s\n' "${specs[@]}" |
	xargs -P 2 -L 1 sh -c '"$0" "$1" populate "$2" "$3/$4" "$5" ${6:+"$6"}' \
		"$PY" "$HELPER" "$TEMPLATE" "$TREE" >"$WORK/populate.out" ||
	die "populating failed: $(cat "$WORK/populate.out")"
sync
T_POP_END=$(now)
TOTAL_JOBS=$((JOBS + 2 * TEN_K_JOBS + 1))
TEN_F_N=$(find "$TREE/ten-f" -mindepth 1 -maxdepth 1 | wc -l)
WS_N=$(find "$TREE/ws00" -mindepth 1 -maxdepth 1 | wc -l)
note "jobs written" "$(group "$JOBS") in ws00..ws$(printf %02d $((WORKSPACES - 1))) + 2 x $TEN_K_JOBS in ten-f, ten-l + 1 probe = $(group "$TOTAL_JOBS") done jobs, $(elapsed "$T_POP" "$T_POP_END") s to write and sync"
note "state_dir size" "$(du -sh "$STATE" | cut -f1), $(find "$STATE/tree" -type f | wc -l) files"

# ---------------------------------------------------------------- 1: cold mount

PROBE_FILE=$D/ws00/j1.meta
progress "cold mount (caches dropped)"
sync
if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then DROPPED=yes; else DROPPED="NO (drop_caches not writable)"; fi
mount_timed "$PROBE_FILE"
COLD_S=$MOUNT_S
judge "mount, $(group "$TOTAL_JOBS") done jobs, COLD cache (caches dropped: $DROPPED)" "$COLD_S s" "< $MOUNT_MAX s" "$(ok_below "$COLD_S" $MOUNT_MAX)"
ST=$("$PY" "$HELPER" status "$DPID")
info "daemon right after the cold mount" "RSS $(kv "$ST" rss_mib) MiB, HWM $(kv "$ST" hwm_mib) MiB, $(kv "$ST" threads) threads" ""

# ---------------------------------------------------------------- 2: ls

# Each directory is listed first right after the mount (cold: the daemon
# has not seen it yet), then again (warm). LC_ALL=C: byte order, no locale
# collation cost; the output goes to a file, as a pipe would take it.
LS_OUT=$WORK/ls.out
time_ls() { # FLAG DIR ENTRIES LABEL TARGETED(1/0)
	local t0 t1 s lines want=$(($3 + 2))
	[ "$1" = -f ] || want=$(($3 + 1)) # ls -l: a "total" line, no . and ..
	t0=$(now)
	LC_ALL=C ls "$1" "$2" >"$LS_OUT"
	t1=$(now)
	s=$(elapsed "$t0" "$t1")
	lines=$(wc -l <"$LS_OUT")
	[ "$lines" = "$want" ] || note "ls $1 $2" "printed $lines lines, expected $want"
	if [ "$5" = 1 ]; then
		judge "ls $1, $(group "$3") entries, $4" "$s s" "< $LS_MAX s" "$(ok_below "$s" $LS_MAX)"
	else
		info "ls $1, $(group "$3") entries (one $(group $(($3 / 3)))-job workspace), $4" "$s s" "(< $LS_MAX s is for 10,000)"
	fi
}
progress "ls"
time_ls -f "$D/ten-f" "$TEN_F_N" "cold (first after mount)" 1
time_ls -f "$D/ten-f" "$TEN_F_N" "warm" 1
time_ls -l "$D/ten-l" "$TEN_F_N" "cold (first after mount)" 1
time_ls -l "$D/ten-l" "$TEN_F_N" "warm" 1
time_ls -f "$D/ws00" "$WS_N" "cold" 0
time_ls -f "$D/ws00" "$WS_N" "warm" 0
time_ls -l "$D/ws01" "$WS_N" "cold" 0
time_ls -l "$D/ws01" "$WS_N" "warm" 0
# the same listing of the backing directory, without FUSE: what the file
# system under state_dir costs by itself
t0=$(now)
LC_ALL=C ls -l "$TREE/ten-l" >"$LS_OUT"
info "ls -l, 10,000 entries, of state_dir/tree itself ($FSTYPE, no FUSE)" "$(elapsed "$t0" "$(now)") s" "(baseline)"

# Why ls -l costs what it does: the FUSE requests one more (warm) ls -l of
# the 10,000-entry directory makes the kernel send, by type, counted at the
# kernel's fuse:fuse_request_send tracepoint (perf, when it is there).
if command -v perf >/dev/null && perf list fuse:fuse_request_send 2>/dev/null | grep -q fuse_request_send; then
	perf record -q -m 16M -e fuse:fuse_request_send -o "$WORK/perf.data" -- \
		env LC_ALL=C ls -l "$D/ten-l" >/dev/null 2>"$WORK/perf.err"
	REQS=$(perf script -i "$WORK/perf.data" 2>/dev/null | grep -o '(FUSE_[A-Z_]*)' |
		sed 's/^(FUSE_//; s/)$//' | sort | uniq -c | sort -rn |
		awk '{ printf "%s%s:%s", sep, $2, $1; sep = " "; n += $1 }
		     END { printf " = %d requests, %.1f per entry", n, n / '"$TEN_F_N"' }')
	note "FUSE requests of one warm ls -l of 10,000 entries" "${REQS:-none recorded} $(grep -i lost "$WORK/perf.err" | head -1)"
else
	note "FUSE requests of one warm ls -l of 10,000 entries" "not counted (no perf, or no fuse:fuse_request_send tracepoint)"
fi

# ---------------------------------------------------------------- 3: memory

ST=$("$PY" "$HELPER" status "$DPID")
RSS=$(kv "$ST" rss_mib)
HWM=$(kv "$ST" hwm_mib)
judge "daemon VmRSS after the cold mount and the ls runs" "$RSS MiB" "< $RSS_MAX MiB" "$(ok_below "$RSS" $RSS_MAX)"
judge "daemon VmHWM (peak RSS) by then" "$HWM MiB" "< $RSS_MAX MiB" "$(ok_below "$HWM" $RSS_MAX)"
stop_daemon
info "unmount after the cold mount" "$DSTOP s, exit $DCODE" ""

LOAD_READERS="-"
if [ "$LS_ONLY" = 0 ]; then

# ---------------------------------------------------------------- 1: warm mount

progress "warm mount (same state_dir, caches as the first mount left them)"
mount_timed "$PROBE_FILE"
WARM_S=$MOUNT_S
judge "mount, $(group "$TOTAL_JOBS") done jobs, WARM cache (2nd mount)" "$WARM_S s" "< $MOUNT_MAX s" "$(ok_below "$WARM_S" $MOUNT_MAX)"
ST=$("$PY" "$HELPER" status "$DPID")
info "daemon right after the warm mount" "RSS $(kv "$ST" rss_mib) MiB, HWM $(kv "$ST" hwm_mib) MiB, $(kv "$ST" threads) threads" ""

# ---------------------------------------------------------------- 4: readers

READERS=$((PROMPTS * PER_PROMPT))
LOAD_READERS=$(cut -d' ' -f1-3 /proc/loadavg)
GATE=scale-$$-$RANDOM
progress "$(group "$READERS") readers on $PROMPTS gated responses"
R=$("$PY" "$HELPER" readers "$D" readers "$PROMPTS" "$PER_PROMPT" "$GATE" "$FAKE_PORT" "$DPID" \
	"$FAKE_PID" "$READERS_BIN")
[ -n "$R" ] || die "the readers run printed nothing"
NREAD=$(kv "$R" readers)
BLOCKED=$(kv "$R" blocked)
judge "readers asleep in read() at once" "$BLOCKED of $NREAD" "$(group "$READERS")" \
	"$([ "$BLOCKED" = "$READERS" ]; echo $?)"
judge "daemon threads, all readers blocked" "$(kv "$R" threads_blocked)" "< $THREADS_MAX" "$(ok_below "$(kv "$R" threads_blocked)" $THREADS_MAX)"
judge "daemon threads, highest seen (every 20 ms)" "$(kv "$R" peak_threads)" "< $THREADS_MAX" "$(ok_below "$(kv "$R" peak_threads)" $THREADS_MAX)"
GOOD=$(kv "$R" ok)
judge "readers with exactly their answer" "$GOOD of $READERS" "all $(group "$READERS")" \
	"$([ "$GOOD" = "$READERS" ]; echo $?)"
info "daemon during the readers run" "RSS $(kv "$R" rss_blocked) MiB blocked, HWM $(kv "$R" hwm_end) MiB at the end" ""
note "readers run" "submit $PROMPTS prompts $(kv "$R" submit_s) s (write errors $(kv "$R" write_errors)); start $NREAD reader threads $(kv "$R" start_s) s (failed to start: $(kv "$R" start_errors)); all asleep after $(kv "$R" block_s) s; gate opened -> all answered in $(kv "$R" answer_s) s; mismatches $(kv "$R" mismatches), errors $(kv "$R" errors), first bad $(kv "$R" first_bad)"
note "CPU seconds from the gate's opening to the last answer" "$(kv "$R" cpu_busy) busy (all cores): readers $(kv "$R" cpu_readers), daemon $(kv "$R" cpu_daemon), fake cloud $(kv "$R" cpu_fake), everything else on the machine $(kv "$R" cpu_others)"
note "requests held at the fake's gate" "$(kv "$R" fake_inflight) (the daemon's max_inflight; the other jobs wait queued in it)"
note "daemon threads idle / blocked / peak" "$(kv "$R" idle_threads) / $(kv "$R" threads_blocked) / $(kv "$R" peak_threads)"
note "daemon threads by name@wchan, readers blocked" "$(kv "$R" names_blocked)"
note "daemon threads by name@wchan, at the peak" "$(kv "$R" peak_names)"
stop_daemon
info "unmount after the readers run" "$DSTOP s, exit $DCODE" ""
fi
END=$(now)

# ---------------------------------------------------------------- report

mem_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
cat <<EOF

promptfs scale figures
======================
machine  : $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk -v k="$mem_kib" 'BEGIN { printf "%.1f GiB", k / 1048576 }')
kernel   : $(uname -srm)
load     : $LOAD_START before, $LOAD_READERS before the readers run, $(cut -d' ' -f1-3 /proc/loadavg) after (1, 5, 15 min)
state_dir: $STATE ($FSTYPE on $(findmnt -n -o SOURCE -T "$WORK"))
daemon   : $PROMPTFS -f -o $DAEMON_OPTS CONFIG MNT
limits   : open files $(ulimit -n), pid_max $(cat /proc/sys/kernel/pid_max)
duration : $(elapsed "$START" "$END") s (then the work directory is removed, which takes a while too)

How:
  mount    : a poller stats MNT/$MODEL_DIR/ws00/j1.meta every 1 ms; time from
             starting the daemon to the first stat that succeeds
  ls       : LC_ALL=C ls -f|-l DIR > file, wall time; ten-f/ten-l hold $TEN_K_JOBS jobs + notes.txt
  memory   : VmRSS, VmHWM of /proc/PID/status
  readers  : $PROMPTS prompts "reader prompt I [[fault:gate name=G]]" (16 writers), then
             $PER_PROMPT threads on each .response (one process, scale_readers.c) reading up
             to end-of-file; wait until /proc/READERS/task/*/wchan shows all in
             request_wait_answer; count /proc/PID/task (also every 20 ms throughout);
             open the gate; compare each answer with "echo: <prompt>"

EOF

w1=6 w2=8 w3=6
for r in "${ROWS[@]}"; do
	IFS='|' read -r f m t v <<<"$r"
	[ ${#f} -gt "$w1" ] && w1=${#f}
	[ ${#m} -gt "$w2" ] && w2=${#m}
	[ ${#t} -gt "$w3" ] && w3=${#t}
done
printf "%-${w1}s  %-${w2}s  %-${w3}s  %s\n" figure measured target result
printf "%-${w1}s  %-${w2}s  %-${w3}s  %s\n" "$(printf '%*s' "$w1" '' | tr ' ' -)" \
	"$(printf '%*s' "$w2" '' | tr ' ' -)" "$(printf '%*s' "$w3" '' | tr ' ' -)" ------
for r in "${ROWS[@]}"; do
	IFS='|' read -r f m t v <<<"$r"
	printf "%-${w1}s  %-${w2}s  %-${w3}s  %s\n" "$f" "$m" "$t" "$v"
done
echo
for n in "${NOTES[@]}"; do
	IFS='|' read -r k v <<<"$n"
	printf "%s: %s\n" "$k" "$v"
done
echo
if [ $FAILED = 0 ]; then echo "result: every figure met its target"; else echo "result: SOME FIGURES MISSED THEIR TARGET"; fi
exit $FAILED
