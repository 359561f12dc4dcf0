#!/bin/bash
# Runs a file of questions (one a line) through one promptfs model directory,
# in parallel, and prints the answers in the order of the questions.
#
#   examples/batch.sh questions.txt /mnt/ai/openai/us/gpt-4o-mini [PARALLEL]
#
# Each question becomes a job in a new workspace directory under the model
# directory: written to N.tmp, then renamed to N.prompt (the rename submits
# it whole). A job has ended when N.error exists (it failed or was refused;
# the file says why) or N.meta says "done"; only then is N.response read.
# (A read while the job runs can fail with EIO when an attempt is cut, even
# though a retry then answers.) Blank lines are skipped. Exit status: 0 when
# every question got an answer, 1 otherwise.
set -euo pipefail

if [ $# -lt 2 ] || [ ! -f "$1" ] || [ ! -d "$2" ]; then
	echo "usage: $0 QUESTIONS_FILE MODEL_DIR [PARALLEL (default 8)]" >&2
	exit 2
fi
questions=$1 model=$2 parallel=${3:-8}

list=$(mktemp)
trap 'rm -f "$list"' EXIT
grep -v '^[[:space:]]*$' "$questions" >"$list" || true
total=$(wc -l <"$list")
[ "$total" -gt 0 ] || { echo "no questions in $questions" >&2; exit 2; }

job=$model/batch-$(date +%Y%m%d-%H%M%S)-$$
mkdir "$job"

# Submit: job N is line N. A refused submission (budget, policy, bad prompt)
# makes its mv fail; it is reported below with the others.
# shellcheck disable=SC2016  # expanded by the inner sh
seq 1 "$total" | xargs -P "$parallel" -I{} sh -c \
	'sed -n "$1p" "$2" >"$3/$1.tmp" && mv "$3/$1.tmp" "$3/$1.prompt"' \
	sh {} "$list" "$job" || true

# state N: done, failed, or running.
state() {
	if [ -e "$job/$1.error" ]; then
		echo failed
	elif grep -q '"status": *"done"' "$job/$1.meta" 2>/dev/null; then
		echo "done"
	elif grep -q '"status": *"\(failed\|cancelled\)"' "$job/$1.meta" 2>/dev/null ||
		[ ! -e "$job/$1.prompt" ]; then
		echo failed # or never submitted (its N.tmp could not be written)
	else
		echo running
	fi
}

# Collect, in order.
failed=""
for n in $(seq 1 "$total"); do
	echo "[$n] $(sed -n "${n}p" "$list")"
	while [ "$(state "$n")" = running ]; do sleep 0.2; done
	if [ "$(state "$n")" = "done" ] && answer=$(cat "$job/$n.response"); then
		printf '%s\n\n' "$answer"
	else
		failed="$failed $n"
		printf 'FAILED: %s\n\n' "$(cat "$job/$n.error" 2>/dev/null || echo "no $n.error file")"
	fi
done

nfailed=$(echo "$failed" | wc -w)
echo "$((total - nfailed))/$total answered${failed:+, failed:$failed}; files in $job" >&2
[ "$nfailed" -eq 0 ]
