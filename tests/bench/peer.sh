#!/bin/bash
# promptfs side by side with a peer: the same instant backend (nginx
# returning a fixed chat completion) reached three ways -- through a
# promptfs mount, through Portkey's AI gateway (an HTTP proxy, from npm),
# and directly -- plus, for scale, the same round trip through a FUSE file
# system that does nothing but answer (the FUSE floor: what the kernel's
# protocol alone allows here), promptfs again with state_dir on a tmpfs
# (what durability on this disk costs), the disk's own rates of fdatasync
# and of file creation, and what one thread waking another costs on one
# CPU and across two. Not part of the test suite; run it by hand, as root:
#
#   ./tests/bench/peer.sh [--build DIR] [--keep] [--seconds N] [--admission]
#
# Installs what is missing (nginx-light, wrk, curl with apt-get; the
# gateway with npm into /var/tmp/promptfs-bench-npm, kept between runs),
# starts everything on 127.0.0.1 at free ports under a temporary directory
# in /var/tmp (on disk, as a real state_dir is), removes all it started on
# exit, and prints a report. Each measured run lasts N seconds (default 10).
# It is a measurement, not a check: it exits 0 when every run ran without
# errors, 1 when any run had errors, 2 when it could not run. --keep leaves the temporary
# directory (logs, configs, state) in place. --admission adds the cost of
# admission control: promptfs at 32 writers with a policy on each of the
# five levels of the path and a budget on three of them, against the same
# without policies, alternating (without, with, without, with).
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$ROOT/build
KEEP=0
ADMISSION=0
DURATION=10
while [ $# -gt 0 ]; do
	case $1 in
	--build) BUILD=$(cd "${2:?--build needs a directory}" && pwd) || exit 2; shift 2 ;;
	--build=*) BUILD=$(cd "${1#--build=}" && pwd) || exit 2; shift ;;
	--keep) KEEP=1; shift ;;
	--admission) ADMISSION=1; shift ;;
	--seconds) DURATION=${2:?--seconds needs a number}; shift 2 ;;
	--seconds=*) DURATION=${1#--seconds=}; shift ;;
	-h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "peer.sh: unknown argument: $1" >&2; exit 2 ;;
	esac
done

PROMPTFS=$BUILD/fs/promptfs
PY=/usr/bin/python3
HERE=$ROOT/tests/bench
GATEWAY_PKG=@portkey-ai/gateway
GATEWAY_VERSION=1.15.2
NPM_DIR=/var/tmp/promptfs-bench-npm
GATEWAY_DIR=$NPM_DIR/node_modules/$GATEWAY_PKG
MODEL_DIR=local/localhost/llama3.2
# Priced, so that budgets apply (and every run charges the ledger).
CONFIG_FMT='{"clouds":{"local":{"provider":"openai","regions":{"localhost":{"geo":"local","endpoint":"http://127.0.0.1:%s/v1","models":{"llama3.2":{"price":{"input_per_mtok":0.1,"output_per_mtok":0.4}}}}}}}}'
# The one answer of the backend, for every request: an OpenAI chat
# completion, not streamed. promptfs asks for a stream ("stream": true) but
# reads a plain JSON body too, as it must for servers that do not stream;
# the gateway is sent the same request without "stream" and so proxies a
# non-streamed answer. Both thus get these same bytes from the same
# server, and the answer file holds its content.
ANSWER='The capital of France is Paris.'
COMPLETION='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"llama3.2","choices":[{"index":0,"message":{"role":"assistant","content":"'$ANSWER'"},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":8,"total_tokens":22}}'
REQUEST='{"model":"llama3.2","messages":[{"role":"user","content":"What is the capital of France?"}]}'

die() { echo "peer.sh: $*" >&2; exit 2; }
progress() { echo "  .. $*" >&2; }
[ "$(id -u)" = 0 ] || die "run as root (it mounts a FUSE file system and may install packages)"
[ -x "$PROMPTFS" ] || die "no daemon at $PROMPTFS (ninja -C $BUILD)"
case $DURATION in '' | *[!0-9]* | 0) die "--seconds needs a whole number of seconds above 0" ;; esac
for tool in cc fusermount3 mountpoint "$PY"; do
	command -v "$tool" >/dev/null || die "$tool is missing"
done

# ---------------------------------------------------------------- installs

missing=()
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
	progress "apt-get install ${missing[*]}"
	apt-get update -q >/dev/null || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
		die "apt-get install ${missing[*]} failed"
fi

gateway_version() { node -p "require('$GATEWAY_DIR/package.json').version" 2>/dev/null; }
if [ "$(gateway_version)" != "$GATEWAY_VERSION" ]; then
	progress "npm install $GATEWAY_PKG@$GATEWAY_VERSION into $NPM_DIR"
	mkdir -p "$NPM_DIR" || die "cannot make $NPM_DIR"
	# --ignore-scripts: its only script, postinstall, is patch-package,
	# and the published package ships no patches for it to apply.
	npm install --prefix "$NPM_DIR" --no-audit --no-fund --ignore-scripts \
		"$GATEWAY_PKG@$GATEWAY_VERSION" >"$NPM_DIR/install.log" 2>&1 ||
		die "npm install failed: $(tail -5 "$NPM_DIR/install.log")"
	[ "$(gateway_version)" = "$GATEWAY_VERSION" ] || die "npm installed $(gateway_version), not $GATEWAY_VERSION"
fi
# The package's bin entry; it reads --port=N, and --headless leaves out the
# web console and its log stream.
GATEWAY_JS=$GATEWAY_DIR/build/start-server.js
[ -f "$GATEWAY_JS" ] || die "no $GATEWAY_JS"

# ---------------------------------------------------------------- processes

WORK=$(mktemp -d /var/tmp/promptfs-peer.XXXXXX) || die "mktemp failed"
chmod 755 "$WORK"

# What this script started, for the cleanup. The servers run in sessions
# of their own (setsid), so that a Ctrl-C reaches only this script, which
# then stops them in order: the mount before the backend it uses.
MNT=$WORK/mnt
FLOOR_MNT=$WORK/floor
MEMORY_STATE=$WORK/memory-state
DAEMON= FLOOR= NGINX= GATEWAY= RUNNING=

# stop_daemon: unmounts promptfs and waits for it to exit (5 s, then KILL).
stop_daemon() {
	local i
	if mountpoint -q "$MNT" 2>/dev/null; then
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null
	fi
	if [ -n "$DAEMON" ]; then
		for i in $(seq 50); do
			kill -0 "$DAEMON" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$DAEMON" 2>/dev/null
		wait "$DAEMON" 2>/dev/null
	fi
	DAEMON=
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[ -n "$RUNNING" ] && kill -TERM "$RUNNING" 2>/dev/null
	stop_daemon
	mountpoint -q "$MEMORY_STATE" 2>/dev/null && umount "$MEMORY_STATE"
	if mountpoint -q "$FLOOR_MNT" 2>/dev/null; then
		fusermount3 -u "$FLOOR_MNT" 2>/dev/null || fusermount3 -uz "$FLOOR_MNT" 2>/dev/null
	fi
	[ -n "$FLOOR" ] && kill -KILL "$FLOOR" 2>/dev/null
	[ -n "$GATEWAY" ] && kill -TERM "$GATEWAY" 2>/dev/null
	# nginx's master stops its worker on SIGTERM.
	[ -n "$NGINX" ] && kill -TERM "$NGINX" 2>/dev/null
	wait 2>/dev/null
	if [ "$KEEP" = 1 ]; then
		echo "work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'echo; echo "peer.sh: interrupted" >&2; exit 130' INT TERM

free_port() {
	"$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http URL PID LOG HEADER...: until a POST of the request to URL
# answers 200, or PID exits, or 15 s have passed.
wait_http() {
	local url=$1 pid=$2 log=$3 i
	shift 3
	for i in $(seq 150); do
		curl -fsS -o /dev/null "$@" -d "$REQUEST" "$url" 2>/dev/null && return 0
		kill -0 "$pid" 2>/dev/null || die "$(basename "$log" .log) exited: $(tail -5 "$log")"
		sleep 0.1
	done
	die "no answer from $url (log: $log)"
}

start_nginx() {
	local dir=$WORK/nginx
	mkdir -p "$dir"
	NGINX_PORT=$(free_port)
	# One worker: it answers tens of thousands of requests a second, far
	# above what either system under test reaches, and leaves the second
	# core to them. Keep-alive with no cap on requests per connection, so
	# no client pays for reconnecting; no access log.
	cat >"$dir/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	keepalive_timeout 65s;
	keepalive_requests 1000000;
	client_body_temp_path $dir/body;
	server {
		listen 127.0.0.1:$NGINX_PORT;
		location = /v1/chat/completions {
			default_type application/json;
			return 200 '$COMPLETION';
		}
		location / { return 404; }
	}
}
EOF
	setsid /usr/sbin/nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/nginx.log" 2>&1 &
	NGINX=$!
	NGINX_URL=http://127.0.0.1:$NGINX_PORT/v1/chat/completions
	wait_http "$NGINX_URL" "$NGINX" "$dir/nginx.log" -H 'Content-Type: application/json'
}

# The gateway's own headers, as its source names them: x-portkey-provider
# picks the provider's request and response format, x-portkey-custom-host
# replaces the provider's base URL (127.0.0.1 is on its default list of
# trusted custom hosts), and Authorization goes on to the provider.
GATEWAY_HEADERS=()
start_gateway() {
	local dir=$WORK/gateway
	mkdir -p "$dir"
	GATEWAY_PORT=$(free_port)
	(cd "$dir" && exec setsid node "$GATEWAY_JS" --port="$GATEWAY_PORT" --headless) >"$dir/gateway.log" 2>&1 &
	GATEWAY=$!
	GATEWAY_URL=http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions
	GATEWAY_HEADERS=(
		'Content-Type: application/json'
		'Authorization: Bearer sk-bench'
		'x-portkey-provider: openai'
		"x-portkey-custom-host: http://127.0.0.1:$NGINX_PORT/v1"
	)
	local h args=()
	for h in "${GATEWAY_HEADERS[@]}"; do args+=(-H "$h"); done
	wait_http "$GATEWAY_URL" "$GATEWAY" "$dir/gateway.log" "${args[@]}"
	# Before measuring: the gateway passes nginx's answer on unchanged (as
	# JSON; it may reformat it).
	local got
	got=$(curl -fsS "${args[@]}" -d "$REQUEST" "$GATEWAY_URL") || die "request through the gateway failed"
	"$PY" -c 'import json, sys; sys.exit(json.loads(sys.argv[1]) != json.loads(sys.argv[2]))' \
		"$got" "$COMPLETION" || die "the gateway answered $got, not nginx's $COMPLETION"
}

# start_daemon STATE_DIR: promptfs mounted at $MNT, checked with one prompt
start_daemon() {
	mkdir -p "$MNT" "$1"
	printf "$CONFIG_FMT\n" "$NGINX_PORT" >"$WORK/clouds.json"
	setsid "$PROMPTFS" -f -o "state_dir=$1" "$WORK/clouds.json" "$MNT" >>"$WORK/promptfs.log" 2>&1 &
	DAEMON=$!
	local i
	for i in $(seq 300); do
		mountpoint -q "$MNT" && break
		kill -0 "$DAEMON" 2>/dev/null || die "promptfs exited: $(tail -5 "$WORK/promptfs.log")"
		sleep 0.05
	done
	mountpoint -q "$MNT" || die "promptfs did not mount $MNT"
	# Before measuring: one prompt through the mount gets nginx's answer.
	local got
	echo "What is the capital of France?" >"$MNT/$MODEL_DIR/check.prompt" || die "submitting a prompt failed"
	got=$(cat "$MNT/$MODEL_DIR/check.response") || die "reading the answer failed: $(cat "$MNT/$MODEL_DIR/check.error" 2>/dev/null)"
	[ "$got" = "$ANSWER" ] || die "promptfs answered '$got', not '$ANSWER'"
}

# ---------------------------------------------------------------- runs

LOADGEN=$WORK/loadgen
cc -O2 -Wall -pthread -o "$LOADGEN" "$HERE/loadgen.c" || die "cannot build loadgen"

# The request wrk sends, and its results as one line in loadgen's format
# (wrk's own --latency table goes to the log).
wrk_script() { # FILE HEADER...
	local file=$1 h name value
	shift
	{
		echo 'wrk.method = "POST"'
		echo "wrk.body = '$REQUEST'"
		for h in "$@"; do
			name=${h%%:*}
			value=${h#*: }
			echo "wrk.headers[\"$name\"] = \"$value\""
		done
		cat <<'EOF'
function done(summary, latency, requests)
	local e = summary.errors
	local seconds = summary.duration / 1e6
	io.write(string.format("count=%d seconds=%.2f rate=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
		summary.requests, seconds, summary.requests / seconds,
		latency:percentile(50) / 1000, latency:percentile(99) / 1000,
		e.connect + e.read + e.write + e.status + e.timeout))
end
EOF
	} >"$file"
}

# measure LOG CMD...: runs CMD in the background and waits for it. A
# Ctrl-C then interrupts the wait and the trap runs at once; with CMD in
# the foreground, bash would carry on if CMD caught SIGINT itself and
# exited normally, as wrk does.
measure() {
	local log=$1
	shift
	"$@" >"$log" 2>&1 &
	RUNNING=$!
	wait "$RUNNING"
	RUNNING=
}

RESULTS=()   # "label|clients|log|result line" rows
FAILED=0
# record LABEL CLIENTS LOG [PREFIX]: keeps the result line of a run (the
# last one starting with count=, or with "PREFIX count="), and notes errors
record() {
	local line
	line=$(grep -E "^${4:+$4 }count=" "$3" | tail -1)
	line=${line#"${4:+$4 }"}
	[ -n "$line" ] || line="count=0 seconds=0 rate=0 p50_ms=0 p99_ms=0 errors=no-result"
	[ "$(kv "$line" errors)" = 0 ] || FAILED=1
	RESULTS+=("$1|$2|$3|$line")
}
# kv LINE KEY: the value of KEY in a "k=v k=v" line
kv() { local w; for w in $1; do [ "${w%%=*}" = "$2" ] && { echo "${w#*=}"; return; }; done; echo "?"; }

WARMUP=$((DURATION < 2 ? DURATION : 2))
run_wrk() { # LABEL LUA URL
	local c t log
	progress "$1: warm-up ${WARMUP}s, then 1 and 32 connections, ${DURATION}s each"
	measure "$WORK/$1-warmup.log" wrk -t2 -c32 -d"${WARMUP}s" -s "$2" "$3"
	for c in 1 32; do
		t=$((c == 1 ? 1 : 2))
		log=$WORK/$1-$c.log
		measure "$log" wrk -t$t -c$c -d"${DURATION}s" --latency -s "$2" "$3"
		record "$1" "$c" "$log"
	done
}

# round_trips LABEL DIR: loadgen's round trips in DIR, a warm-up at 32
# writers, then 1 and 32 writers, recorded as LABEL.
round_trips() {
	local c log
	progress "$1: warm-up ${WARMUP}s, then 1 and 32 writers, ${DURATION}s each"
	mkdir "$2/warmup" "$2/run-1" "$2/run-32" || die "cannot make workspaces in $2"
	measure "$WORK/$1-warmup.log" "$LOADGEN" "$2/warmup" 32 "$WARMUP" "$ANSWER"
	for c in 1 32; do
		log=$WORK/$1-$c.log
		measure "$log" "$LOADGEN" "$2/run-$c" "$c" "$DURATION" "$ANSWER"
		record "$1" "$c" "$log"
	done
}

run_promptfs() {
	round_trips promptfs "$MNT/$MODEL_DIR"
}

# promptfs again, with state_dir on a tmpfs: every fdatasync and file
# creation then costs only memory, so the two runs side by side show what
# making each job durable on this disk costs. Not a way to run promptfs:
# a tmpfs loses every job at a reboot.
run_memory() {
	stop_daemon
	mkdir -p "$MEMORY_STATE"
	mount -t tmpfs -o size=2g,mode=0700 promptfs-bench "$MEMORY_STATE" ||
		die "cannot mount a tmpfs at $MEMORY_STATE"
	start_daemon "$MEMORY_STATE/state"
	round_trips memory "$MNT/$MODEL_DIR"
	stop_daemon
	umount "$MEMORY_STATE" || die "cannot unmount $MEMORY_STATE"
}

# Admission control: a policy at each level from the root to a workspace
# (five), budgets at three, all roomy enough never to refuse.
set_policies() {
	local dir=$MNT/$MODEL_DIR
	setfattr -n user.policy.residency -v local "$MNT" &&
		setfattr -n user.policy.budget_usd -v 1000000 "$MNT" &&
		setfattr -n user.policy.providers -v local "$MNT/local" &&
		setfattr -n user.policy.max_request_usd -v 10 "$MNT/local/localhost" &&
		setfattr -n user.policy.max_output_tokens -v 1000 "$dir" &&
		setfattr -n user.policy.budget_usd -v 1000000 "$dir" &&
		setfattr -n user.policy.budget_period -v day "$dir" &&
		setfattr -n user.policy.temperature -v 0.5 "$1" &&
		setfattr -n user.policy.budget_usd -v 1000000 "$1" ||
		die "cannot set the policies"
}
clear_policies() {
	local d
	for d in "$MNT" "$MNT/local" "$MNT/local/localhost" "$MNT/$MODEL_DIR" "$1"; do
		: >"$d/.policy" || die "cannot clear the policy of $d"
	done
}

run_admission() {
	local round log dir=$MNT/$MODEL_DIR ws
	progress "admission: 32 writers without and with policies, twice, ${DURATION}s each"
	for round in 1 2; do
		ws=$dir/plain-$round
		mkdir "$ws" && mkdir "$dir/policy-$round" || die "cannot make workspaces in $dir"
		log=$WORK/plain-$round.log
		measure "$log" "$LOADGEN" "$ws" 32 "$DURATION" "$ANSWER"
		record plain-$round 32 "$log"
		ws=$dir/policy-$round
		set_policies "$ws"
		log=$WORK/policy-$round.log
		measure "$log" "$LOADGEN" "$ws" 32 "$DURATION" "$ANSWER"
		record policy-$round 32 "$log"
		clear_policies "$ws"
	done
}

# The FUSE floor: the same round trip through a file system that does
# nothing but answer (tests/bench/fuse_floor.c), so the report shows what
# the kernel's FUSE protocol alone allows here, and how much of it
# promptfs reaches.
run_floor() {
	local i dir=$FLOOR_MNT
	cc -O2 -Wall -pthread -o "$WORK/fuse_floor" "$HERE/fuse_floor.c" \
		$(pkg-config --cflags --libs fuse3) || die "cannot build fuse_floor"
	mkdir -p "$dir"
	setsid "$WORK/fuse_floor" "$ANSWER" "$dir" >"$WORK/fuse_floor.log" 2>&1 &
	FLOOR=$!
	for i in $(seq 100); do
		mountpoint -q "$dir" && break
		sleep 0.05
	done
	mountpoint -q "$dir" || die "fuse_floor did not mount $dir: $(tail -3 "$WORK/fuse_floor.log")"
	round_trips floor "$dir"
	fusermount3 -u "$dir" || die "cannot unmount $dir"
	wait "$FLOOR" 2>/dev/null
	FLOOR=
}

# What the disk charges for a new file beside state_dir: a job makes
# three, and this figure moves with the file system's history (ext4
# without a journal skips recently freed inodes one by one, so a large
# rm -rf shortly before makes every creation slower).
run_create() {
	progress "file creation: 1 thread, ${DURATION}s"
	mkdir -p "$WORK/create"
	measure "$WORK/create-1.log" "$LOADGEN" --create "$WORK/create" 1 "$DURATION"
	record create 1 "$WORK/create-1.log"
}

run_fsync() {
	local c log
	progress "fdatasync: 1 and 32 threads, ${DURATION}s each"
	mkdir -p "$WORK/fsync"
	for c in 1 32; do
		log=$WORK/fsync-$c.log
		measure "$log" "$LOADGEN" --fsync "$WORK/fsync/f" "$c" "$DURATION"
		record fdatasync "$c" "$log"
	done
}

# What one thread waking another costs here (tests/bench/handoff.c): a
# round trip through two pipes with both threads on one CPU, then on two.
run_handoff() {
	progress "thread hand-off: one CPU, then two, ${DURATION}s each"
	cc -O2 -Wall -pthread -o "$WORK/handoff" "$HERE/handoff.c" || die "cannot build handoff"
	measure "$WORK/handoff.log" "$WORK/handoff" "$DURATION"
	record same-cpu 1 "$WORK/handoff.log" same-cpu
	[ "$(nproc)" -gt 1 ] && record other-cpu 1 "$WORK/handoff.log" other-cpu
}

# ---------------------------------------------------------------- main

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "promptfs peer benchmark -- work directory $WORK" >&2
start_nginx
start_gateway

wrk_script "$WORK/direct.lua" 'Content-Type: application/json' 'Authorization: Bearer sk-bench'
wrk_script "$WORK/gateway.lua" "${GATEWAY_HEADERS[@]}"
run_wrk nginx "$WORK/direct.lua" "$NGINX_URL"
run_wrk portkey "$WORK/gateway.lua" "$GATEWAY_URL"
# before promptfs: the kernel then still has none of its files to write
# back, which would take CPU time from the floor's run
run_floor
start_daemon "$WORK/state"
run_promptfs
[ "$ADMISSION" = 1 ] && run_admission
run_memory
run_create
run_fsync
run_handoff
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report

result() { # LABEL CLIENTS KEY
	local r label clients log line
	for r in "${RESULTS[@]}"; do
		IFS='|' read -r label clients log line <<<"$r"
		[ "$label" = "$1" ] && [ "$clients" = "$2" ] && { kv "$line" "$3"; return; }
	done
	echo "?"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

mem_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
cat <<EOF

promptfs peer benchmark
=======================
machine   : $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk -v k="$mem_kib" 'BEGIN { printf "%.1f GiB", k / 1048576 }')
kernel    : $(uname -srm)
load      : $LOAD_BEFORE before, $LOAD_AFTER after (1, 5, 15 min)
state_dir : $WORK/state, $(df --output=fstype,source "$WORK/state" | tail -1 | awk '{ print $1 " on " $2 }')
promptfs  : $PROMPTFS ($("$PY" "$HERE/bench.py" buildtype "$BUILD")), -o state_dir=STATE, defaults otherwise
Portkey   : $GATEWAY_PKG $GATEWAY_VERSION, node $(node --version), start-server.js --headless
nginx     : $(/usr/sbin/nginx -v 2>&1 | sed 's/^nginx version: //'), 1 worker, keep-alive, access_log off
wrk       : $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), -t1 -c1 and -t2 -c32, --latency, ${DURATION}s per run
backend   : POST /v1/chat/completions answers a fixed non-streamed chat completion
            (${#COMPLETION} bytes, application/json) to all three
round trip: promptfs: write NAME.prompt, close (returns once on disk), read NAME.response
            to EOF, one fresh name per trip, one workspace directory per writer;
            Portkey, nginx: one keep-alive POST and its answer
warm-up   : ${WARMUP}s at 32 clients before each system's runs, not counted

system         clients        requests/s     p50 ms     p99 ms   errors
EOF
for label in promptfs portkey nginx floor memory; do
	case $label in
	promptfs) who=promptfs; unit=writer ;;
	memory) who="promptfs tmpfs"; unit=writer ;;
	floor) who="FUSE floor"; unit=writer ;;
	portkey) who=Portkey; unit=conn ;;
	nginx) who="nginx direct"; unit=conn ;;
	esac
	for clients in 1 32; do
		[ "$clients" = 1 ] && u=$unit || u=${unit}s
		printf "%-14s %-12s %12s %10s %10s %8s\n" "$who" "$clients $u" "$(result $label $clients rate)" \
			"$(result $label $clients p50_ms)" "$(result $label $clients p99_ms)" "$(result $label $clients errors)"
	done
done
cat <<EOF

promptfs / Portkey (above 1: more requests/s, or a longer p50, for promptfs)
  at 32 clients : requests/s $(ratio "$(result promptfs 32 rate)" "$(result portkey 32 rate)"), p50 $(ratio "$(result promptfs 32 p50_ms)" "$(result portkey 32 p50_ms)")
  at 1 client   : requests/s $(ratio "$(result promptfs 1 rate)" "$(result portkey 1 rate)"), p50 $(ratio "$(result promptfs 1 p50_ms)" "$(result portkey 1 p50_ms)")

promptfs / FUSE floor (the share of what a file system that only answers gets here)
  at 32 writers : requests/s $(ratio "$(result promptfs 32 rate)" "$(result floor 32 rate)")
  at 1 writer   : requests/s $(ratio "$(result promptfs 1 rate)" "$(result floor 1 rate)")

promptfs / promptfs with state_dir on tmpfs (below 1: what durability on this disk costs)
  at 32 writers : requests/s $(ratio "$(result promptfs 32 rate)" "$(result memory 32 rate)")
  at 1 writer   : requests/s $(ratio "$(result promptfs 1 rate)" "$(result memory 1 rate)"), p50 $(ratio "$(result promptfs 1 p50_ms)" "$(result memory 1 p50_ms)")

disk file creation, empty files, one directory, beside state_dir
  1 thread   : $(result create 1 rate)/s (p50 $(result create 1 p50_ms) ms, p99 $(result create 1 p99_ms) ms, errors $(result create 1 errors))

disk fdatasync, 128-byte appends, one file per thread, beside state_dir
  1 thread   : $(result fdatasync 1 rate)/s (p50 $(result fdatasync 1 p50_ms) ms, p99 $(result fdatasync 1 p99_ms) ms, errors $(result fdatasync 1 errors))
  32 threads : $(result fdatasync 32 rate)/s (p50 $(result fdatasync 32 p50_ms) ms, p99 $(result fdatasync 32 p99_ms) ms, errors $(result fdatasync 32 errors))

thread hand-off: one thread wakes another through a pipe and is woken by its answer
  one CPU    : p50 $(result same-cpu 1 p50_ms) ms a round trip, $(result same-cpu 1 cpu_us) us of CPU
  two CPUs   : p50 $(result other-cpu 1 p50_ms) ms a round trip, $(result other-cpu 1 cpu_us) us of CPU

EOF
if [ "$ADMISSION" = 1 ]; then
	plain=$(awk -v a="$(result plain-1 32 rate)" -v b="$(result plain-2 32 rate)" 'BEGIN { printf "%.1f", (a + b) / 2 }')
	policy=$(awk -v a="$(result policy-1 32 rate)" -v b="$(result policy-2 32 rate)" 'BEGIN { printf "%.1f", (a + b) / 2 }')
	cat <<EOF
admission control, promptfs at 32 writers (policies on 5 levels, budgets on 3)
  without policies : $(result plain-1 32 rate), $(result plain-2 32 rate) requests/s (mean $plain, p50 $(result plain-1 32 p50_ms) / $(result plain-2 32 p50_ms) ms)
  with policies    : $(result policy-1 32 rate), $(result policy-2 32 rate) requests/s (mean $policy, p50 $(result policy-1 32 p50_ms) / $(result policy-2 32 p50_ms) ms)
  with / without   : $(ratio "$policy" "$plain")

EOF
fi
for r in "${RESULTS[@]}"; do
	IFS='|' read -r label clients log line <<<"$r"
	# loadgen's first error, or wrk's error counts
	[ "$(kv "$line" errors)" = 0 ] ||
		echo "errors in $label at $clients: $(grep -E '^loadgen:|errors:|Non-2xx' "$log" | tr -s ' \n' ' ')"
done
if [ $FAILED = 0 ]; then
	echo "result: every run completed without errors"
else
	echo "result: SOME RUNS HAD ERRORS (their logs stay with --keep)"
fi
exit $FAILED
