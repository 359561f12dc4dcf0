#!/bin/sh
# Builds the libFuzzer targets of tests/fuzz/ with clang into build-fuzz/
# and runs each for SECONDS (default 60), two at a time, starting from the
# seed corpora in tests/fuzz/corpus/<target>/. Exits non-zero when a
# target finds a crash, leak, timeout or sanitizer report; the reproducer
# is left in build-fuzz/<target>/.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/build-fuzz"
seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-"sse eventstream stream_parsers classify_error prompt token_response"}
jobs=${FUZZ_JOBS:-2}
cc=${CC:-clang}

cflags="-g -O1 -std=c11 -D_GNU_SOURCE -I$root -fno-omit-frame-pointer
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
# Everything the parsers need; the engine and FUSE are left out.
sources="$root/backends/anthropic.c $root/backends/azure.c $root/backends/bedrock.c
	$root/backends/eventstream.c $root/backends/google_auth.c $root/backends/openai.c
	$root/backends/openai_chat.c $root/backends/outcome.c $root/backends/request.c
	$root/backends/retry.c $root/backends/sigv4.c $root/backends/sse.c
	$root/backends/sse_answer.c $root/backends/utf8.c $root/backends/vertex.c
	$root/backends/wire_util.c $root/fs/prompt.c $root/fs/names.c"
libs="-ljansson -lcurl -lcrypto -lm"

mkdir -p "$out/obj"
objs=""
for src in $sources; do
	obj="$out/obj/$(basename "$(dirname "$src")")_$(basename "$src" .c).o"
	# shellcheck disable=SC2086
	$cc $cflags -c "$src" -o "$obj"
	objs="$objs $obj"
done
for t in $targets; do
	# shellcheck disable=SC2086
	$cc $cflags "$here/fuzz_$t.c" $objs $libs -o "$out/fuzz_$t"
done

# One target: a scratch corpus that starts from the seeds, so the seeds
# in the repository stay small and hand-written.
run_one() {
	t=$1
	work="$out/$t"
	mkdir -p "$work/corpus"
	cp "$here/corpus/$t/"* "$work/corpus/" 2>/dev/null || true
	if (cd "$work" && "$out/fuzz_$t" -max_total_time="$seconds" -timeout=10 \
		-rss_limit_mb=2048 -max_len=8192 -print_final_stats=1 \
		corpus >"$work/log" 2>&1); then
		echo "$t: ok ($(grep -o 'stat::number_of_executed_units: *[0-9]*' \
			"$work/log" | grep -o '[0-9]*$') executions)"
	else
		echo "$t: FAILED, see $work/log"
		tail -n 40 "$work/log"
		return 1
	fi
}

status=0
# Word splitting wanted: one target per word.
# shellcheck disable=SC2086
set -- $targets
while [ $# -gt 0 ]; do
	pids=""
	n=0
	while [ $# -gt 0 ] && [ $n -lt "$jobs" ]; do
		run_one "$1" &
		pids="$pids $!"
		n=$((n + 1))
		shift
	done
	for pid in $pids; do
		wait "$pid" || status=1
	done
done
exit $status
