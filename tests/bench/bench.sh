#!/bin/bash
# promptfs benchmark: concurrency against a slow backend, throughput against
# an instant one, and recovery after kill -9. Not part of the test suite; run
# it by hand, as root:
#
#   ./tests/bench/bench.sh [--build DIR] [--keep]
#
# It starts its own fake cloud(s) (127.0.0.1, free port) and daemons under a
# temporary directory, removes everything it started on exit (also on Ctrl-C
# or error), prints a report and exits non-zero if any check failed.
# --keep leaves the temporary directory (logs, state) in place.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$ROOT/build
KEEP=0
while [ $# -gt 0 ]; do
	case $1 in
	--build) BUILD=$(cd "${2:?--build needs a directory}" && pwd) || exit 2; shift 2 ;;
	--build=*) BUILD=$(cd "${1#--build=}" && pwd) || exit 2; shift ;;
	--keep) KEEP=1; shift ;;
	-h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench.sh: unknown argument: $1" >&2; exit 2 ;;
	esac
done

PROMPTFS=$BUILD/fs/promptfs
PY=/usr/bin/python3
HELPER=$ROOT/tests/bench/bench.py
FAKECLOUD=$ROOT/tests/fakecloud/fakecloud.py
MODEL_DIR=local/localhost/llama3.2
CONFIG_FMT='{"clouds":{"local":{"provider":"openai","regions":{"localhost":{"geo":"local","endpoint":"http://127.0.0.1:%s/v1","models":{"llama3.2":{}}}}}}}'

die() { echo "bench.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "run as root (it mounts FUSE file systems)"
[ -x "$PROMPTFS" ] || die "no daemon at $PROMPTFS (ninja -C $BUILD)"
[ -x "$PY" ] || die "$PY is missing"
for tool in fusermount3 mountpoint setsid xargs; do
	command -v $tool >/dev/null || die "$tool is missing"
done

WORK=$(mktemp -d /tmp/promptfs-bench.XXXXXX) || die "mktemp failed"
chmod 755 "$WORK"

# What this script started, for the cleanup.
MOUNTS=()    # mountpoints
DAEMONS=()   # daemon pids
FAKES=()     # fake cloud pids
GROUPS_=()   # process groups of background load (setsid)

cleanup() {
	local rc=$? p m i
	trap - EXIT INT TERM
	rm -f "$WORK/sampling"
	for p in "${GROUPS_[@]}"; do
		kill -TERM -- "-$p" 2>/dev/null
	done
	for m in "${MOUNTS[@]}"; do
		mountpoint -q "$m" 2>/dev/null || continue
		fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
	done
	for p in "${DAEMONS[@]}"; do
		for i in $(seq 50); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$p" 2>/dev/null
	done
	for p in "${FAKES[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	for p in "${GROUPS_[@]}"; do
		kill -KILL -- "-$p" 2>/dev/null
	done
	wait 2>/dev/null
	for m in "${MOUNTS[@]}"; do
		mountpoint -q "$m" 2>/dev/null && fusermount3 -uz "$m" 2>/dev/null
	done
	if [ "$KEEP" = 1 ]; then
		echo "work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'echo; echo "bench.sh: interrupted" >&2; exit 130' INT TERM

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }
# kv LINE KEY: the value of KEY in a "k=v k=v" line of bench.py
kv() { local w; for w in $1; do [ "${w%%=*}" = "$2" ] && { echo "${w#*=}"; return; }; done; echo "?"; }

# ---------------------------------------------------------------- processes

FAKE_PID= FAKE_PORT=
start_fake() { # LATENCY NAME
	local dir=$WORK/$2 i
	mkdir -p "$dir"
	"$PY" "$FAKECLOUD" --host 127.0.0.1 --port 0 --port-file "$dir/port" \
		--latency "$1" >/dev/null 2>"$dir/stderr" &
	FAKE_PID=$!
	FAKES+=("$FAKE_PID")
	for i in $(seq 300); do
		[ -s "$dir/port" ] && break
		kill -0 "$FAKE_PID" 2>/dev/null || die "fake cloud exited: $(cat "$dir/stderr")"
		sleep 0.05
	done
	FAKE_PORT=$(cat "$dir/port" 2>/dev/null)
	[ -n "$FAKE_PORT" ] || die "fake cloud did not start"
	FAKE_CMD="$PY $FAKECLOUD --host 127.0.0.1 --port 0 --port-file FILE"
}

stop_fake() {
	kill -TERM "$FAKE_PID" 2>/dev/null
	wait "$FAKE_PID" 2>/dev/null
	forget FAKES "$FAKE_PID"
}

DPID=
start_daemon() { # DIR OPTIONS(comma list, may be empty)
	local dir=$1 opts="state_dir=$1/state${2:+,$2}" i
	mkdir -p "$dir/mnt" "$dir/state"
	if [ ! -e "$dir/clouds.json" ]; then
		printf "$CONFIG_FMT\n" "$FAKE_PORT" >"$dir/clouds.json"
	fi
	"$PROMPTFS" -f -o "$opts" "$dir/clouds.json" "$dir/mnt" >>"$dir/promptfs.log" 2>&1 &
	DPID=$!
	DAEMONS+=("$DPID")
	MOUNTS+=("$dir/mnt")
	for i in $(seq 300); do
		mountpoint -q "$dir/mnt" && break
		kill -0 "$DPID" 2>/dev/null || die "promptfs exited: $(tail -5 "$dir/promptfs.log")"
		sleep 0.05
	done
	mountpoint -q "$dir/mnt" || die "promptfs did not mount $dir/mnt"
}

forget() { # ARRAY-NAME VALUE: drops VALUE from the array
	local -n arr=$1
	local keep=() x
	for x in "${arr[@]}"; do [ "$x" = "$2" ] || keep+=("$x"); done
	arr=("${keep[@]}")
}

DCODE= DSTOP=
stop_daemon() { # DIR; sets DCODE to the daemon's exit status, DSTOP to seconds taken
	local mnt=$1/mnt i t0
	t0=$(now)
	for i in $(seq 50); do
		fusermount3 -u "$mnt" 2>/dev/null && break
		mountpoint -q "$mnt" || break
		sleep 0.1
	done
	mountpoint -q "$mnt" && fusermount3 -uz "$mnt"
	for i in $(seq 200); do
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
	DSTOP=$(elapsed "$t0" "$(now)")
	forget DAEMONS "$DPID"
	forget MOUNTS "$mnt"
}

# Runs CMD (which uses $D and $OUT) in its own process group, in the
# background; sets BG to its pid (= its process group).
BG=
background() { # CMD ERRFILE
	setsid bash -c "$1" </dev/null 2>>"$2" &
	BG=$!
	GROUPS_+=("$BG")
}

# ---------------------------------------------------------------- reporting

RESULTS=()   # "scenario|metric|value" rows
FAILED=0
row() { RESULTS+=("$1|$2|$3"); }
# "N lines, first: ..." of the error output of a scenario's commands
errs() { [ -s "$1" ] && echo ", $(wc -l <"$1") error lines, first: $(head -1 "$1")"; }
check() { # SCENARIO WHAT CONDITION-EXIT-STATUS DETAIL
	if [ "$3" = 0 ]; then row "$1" "check: $2" "ok"; else row "$1" "check: $2" "FAILED ($4)"; FAILED=1; fi
}
progress() { echo "  .. $*" >&2; }

# Commands, with D = the model directory in the mount and OUT = a local
# directory; they are run by `bash -c` with both exported.
S1_READ='seq 1 200 | xargs -P 200 -I{} sh -c '\''until [ -e "$D/p{}.response" ]; do sleep 0.02; done; cat "$D/p{}.response" > "$OUT/{}"'\'''
S1_WRITE='seq 1 200 | xargs -P 200 -I{} sh -c '\''echo "q {}" > "$D/p{}.prompt"'\'''
S2_WRITE='seq 1 1000 | xargs -P 32 -I{} sh -c '\''echo "q {}" > "$D/p{}.prompt"'\'''
S2_READ='seq 1 1000 | xargs -P 32 -I{} sh -c '\''cat "$D/p{}.response" > "$OUT/{}"'\'''
S3_WRITE='seq 1 100 | xargs -P 100 -I{} sh -c '\''echo "q {}" > "$D/p{}.prompt"'\'''
S3_READ='seq 1 100 | xargs -P 100 -I{} sh -c '\''cat "$D/p{}.response" > "$OUT/{}"'\'''

# ---------------------------------------------------------------- scenario 1

scenario1() { # LABEL OPTIONS
	local name="1 slow backend, $1" dir=$WORK/s1-$1 t0 t1 t2 rc_w rc_r snap res idle st code
	progress "scenario $name"
	"$PY" "$HELPER" fakereset "$FAKE_PORT" >/dev/null
	start_daemon "$dir" "$2"
	export D=$dir/mnt/$MODEL_DIR OUT=$dir/out
	mkdir -p "$OUT"
	idle=$("$PY" "$HELPER" status "$DPID")

	t0=$(now)
	background "$S1_READ" "$dir/load.err"
	local readers=$BG
	touch "$WORK/sampling"
	"$PY" "$HELPER" watch "$DPID" "$readers" "$WORK/sampling" >"$dir/watch" &
	local watcher=$!
	bash -c "$S1_WRITE" 2>>"$dir/load.err"
	rc_w=$?
	t1=$(now)
	wait "$readers"
	rc_r=$?
	forget GROUPS_ "$readers"
	t2=$(now)
	rm -f "$WORK/sampling"
	wait "$watcher"
	snap=$(cat "$dir/watch")

	res=$("$PY" "$HELPER" answers "$OUT" 200)
	st=$("$PY" "$HELPER" fakestats "$FAKE_PORT")
	stop_daemon "$dir"; code=$DCODE

	row "$name" "daemon options" "${2:-(defaults)}"
	row "$name" "submission, 200 closes returned" "$(elapsed "$t0" "$t1") s"
	row "$name" "wall time, all 200 answers read" "$(elapsed "$t0" "$t2") s"
	row "$name" "backend requests at once (fake's max)" "$(kv "$st" max_inflight)"
	row "$name" "daemon threads: idle / most readers blocked" \
		"$(kv "$idle" threads) / $(kv "$snap" threads) (cat alive: $(kv "$snap" readers), in $(kv "$snap" wchan))"
	row "$name" "daemon threads, highest seen" "$(kv "$snap" max_threads)"
	check "$name" "writers and readers exit 0" "$([ $rc_w = 0 ] && [ $rc_r = 0 ]; echo $?)" "writers $rc_w, readers $rc_r$(errs "$dir/load.err")"
	check "$name" "200 answers exact" "$([ "$(kv "$res" mismatches)" = 0 ]; echo $?)" "$res"
	row "$name" "fusermount3 -u to daemon exit" "$DSTOP s"
	check "$name" "daemon exits 0 on unmount" "$([ "$code" = 0 ]; echo $?)" "exit $code"
}

# ---------------------------------------------------------------- scenario 2

scenario2() {
	local name="2 instant backend" dir=$WORK/s2 t0 t1 t2 t3 rc_w rc_r res st code tb0 tb1
	progress "scenario $name"
	mkdir -p "$dir"
	# the same writer command into a plain local directory: the cost of
	# the shell and xargs themselves, to compare with
	export D=$WORK/s2-baseline OUT=/dev/null
	mkdir -p "$D"
	tb0=$(now)
	bash -c "$S2_WRITE" 2>>"$dir/load.err"
	tb1=$(now)

	start_daemon "$dir" ""
	export D=$dir/mnt/$MODEL_DIR OUT=$dir/out
	mkdir -p "$OUT"
	t0=$(now)
	bash -c "$S2_WRITE" 2>>"$dir/load.err"
	rc_w=$?
	t1=$(now)
	bash -c "$S2_READ" 2>>"$dir/load.err"
	rc_r=$?
	t2=$(now)
	# the same reads again, every job long finished: the read path alone
	bash -c "$S2_READ" 2>>"$dir/load.err"
	t3=$(now)
	st=$("$PY" "$HELPER" status "$DPID")
	res=$("$PY" "$HELPER" answers "$OUT" 1000)
	local fk; fk=$("$PY" "$HELPER" fakestats "$FAKE_PORT")
	stop_daemon "$dir"; code=$DCODE

	row "$name" "submission (32 writers)" "$(rate 1000 "$t0" "$t1") prompts/s ($(elapsed "$t0" "$t1") s)"
	row "$name" "same command into a local dir" "$(rate 1000 "$tb0" "$tb1") files/s ($(elapsed "$tb0" "$tb1") s)"
	row "$name" "end to end (all 1000 read)" "$(rate 1000 "$t0" "$t2") prompts/s ($(elapsed "$t0" "$t2") s)"
	row "$name" "reading 1000 finished responses again" "$(rate 1000 "$t2" "$t3") files/s ($(elapsed "$t2" "$t3") s)"
	row "$name" "backend requests" "$(kv "$fk" requests) (at once: $(kv "$fk" max_inflight))"
	row "$name" "daemon peak RSS (VmHWM)" "$(kv "$st" hwm_mib) MiB (now $(kv "$st" rss_mib) MiB, $(kv "$st" threads) threads)"
	check "$name" "writers and readers exit 0" "$([ $rc_w = 0 ] && [ $rc_r = 0 ]; echo $?)" "writers $rc_w, readers $rc_r$(errs "$dir/load.err")"
	check "$name" "1000 answers exact" "$([ "$(kv "$res" mismatches)" = 0 ]; echo $?)" "$res"
	row "$name" "fusermount3 -u to daemon exit" "$DSTOP s"
	check "$name" "daemon exits 0 on unmount" "$([ "$code" = 0 ]; echo $?)" "exit $code"
}

# ---------------------------------------------------------------- scenario 3

scenario3() {
	local name="3 kill -9, 100 in flight" dir=$WORK/s3 t0 t1 rc_w rc_r pend before res metas after code
	progress "scenario $name"
	start_daemon "$dir" ""
	export D=$dir/mnt/$MODEL_DIR OUT=$dir/out
	mkdir -p "$OUT"
	bash -c "$S3_WRITE" 2>>"$dir/load.err"
	rc_w=$?
	kill -KILL "$DPID"
	wait "$DPID" 2>/dev/null
	forget DAEMONS "$DPID"
	fusermount3 -uz "$dir/mnt"
	pend=$("$PY" "$HELPER" pending "$dir/state/tree/$MODEL_DIR")
	before=$("$PY" "$HELPER" fakestats "$FAKE_PORT")

	t0=$(now)
	start_daemon "$dir" ""
	bash -c "$S3_READ" 2>>"$dir/load.err"
	rc_r=$?
	t1=$(now)
	res=$("$PY" "$HELPER" answers "$OUT" 100)
	metas=$("$PY" "$HELPER" metas "$D" 100)
	after=$("$PY" "$HELPER" fakestats "$FAKE_PORT" 100)
	stop_daemon "$dir"; code=$DCODE

	row "$name" "metas after kill: queued / running / done" \
		"$(kv "$pend" queued) / $(kv "$pend" running) / $(kv "$pend" done) (of $(kv "$pend" total))"
	row "$name" "backend requests before kill / in all" "$(kv "$before" requests) / $(kv "$after" requests) ($(kv "$after" repeated_prompts) prompts sent twice or more)"
	row "$name" "restart to all 100 complete" "$(elapsed "$t0" "$t1") s"
	check "$name" "writers and readers exit 0" "$([ $rc_w = 0 ] && [ $rc_r = 0 ]; echo $?)" "writers $rc_w, readers $rc_r$(errs "$dir/load.err")"
	check "$name" "some jobs unfinished at the kill" \
		"$([ "$(kv "$pend" queued)" != 0 ] || [ "$(kv "$pend" running)" != 0 ]; echo $?)" "$pend"
	check "$name" "100 answers exact (no duplication)" "$([ "$(kv "$res" mismatches)" = 0 ]; echo $?)" "$res"
	check "$name" "100 metas done, one attempt, ok" "$([ "$(kv "$metas" bad)" = 0 ]; echo $?)" "$metas"
	row "$name" "fusermount3 -u to daemon exit" "$DSTOP s"
	check "$name" "daemon exits 0 on unmount" "$([ "$code" = 0 ]; echo $?)" "exit $code"
}

# ---------------------------------------------------------------- main

START=$(now)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "promptfs benchmark -- work directory $WORK" >&2

start_fake 1.5 fake-slow
scenario1 "max_inflight=64" ""
scenario1 "max_inflight=256" "max_inflight=256"
stop_fake

start_fake 0 fake-instant
scenario2
stop_fake

start_fake 1 fake-1s
scenario3
stop_fake
END=$(now)

mem_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
cat <<EOF

promptfs benchmark report
=========================
machine : $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
memory  : $(awk -v k="$mem_kib" 'BEGIN { printf "%.1f GiB", k / 1048576 }')
kernel  : $(uname -srm)
load    : $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end (1, 5, 15 min)
daemon  : $PROMPTFS ($("$PY" "$HELPER" buildtype "$BUILD"))
duration: $(elapsed "$START" "$END") s

Commands (D = MNT/$MODEL_DIR, OUT = a local directory; run with bash -c):
  fake cloud   : $FAKE_CMD --latency 1.5 | 0 | 1
  daemon       : $PROMPTFS -f -o state_dir=STATE CONFIG MNT
                 (scenario 1 also with -o state_dir=STATE,max_inflight=256)
  CONFIG       : $(printf "$CONFIG_FMT" PORT)
  1 readers    : $S1_READ
  1 writers    : $S1_WRITE   (readers started first)
  1 threads    : ls /proc/PID/task | wc -l every 0.1 s, shown at the sample with the
                 most readers asleep in the FUSE driver (/proc/PID/wchan of each cat)
  2 writers    : $S2_WRITE
  2 readers    : $S2_READ   (after the writers)
  2 re-read    : the readers once more, all jobs finished
  2 peak RSS   : VmHWM in /proc/PID/status after the readers
  3 writers    : $S3_WRITE
  3 crash      : kill -9 PID; fusermount3 -uz MNT; count STATE/tree/$MODEL_DIR/*.meta queued/running
  3 restart    : same daemon command, same state_dir; then $S3_READ

EOF

w=0
for r in "${RESULTS[@]}"; do
	IFS='|' read -r s m v <<<"$r"
	[ ${#m} -gt $w ] && w=${#m}
done
last=
for r in "${RESULTS[@]}"; do
	IFS='|' read -r s m v <<<"$r"
	if [ "$s" != "$last" ]; then echo "$s"; last=$s; fi
	printf "  %-${w}s  %s\n" "$m" "$v"
done
echo
if [ $FAILED = 0 ]; then echo "result: all checks passed"; else echo "result: SOME CHECKS FAILED"; fi
exit $FAILED
