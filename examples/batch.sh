#!/bin/bash
# Runs a file of questions (one a line) through one promptfs model directory,
# in parallel, and prints the answers in the order of the questions.
#
#   examples/batch.sh questions.txt /mnt/ai/openai/us/gpt-4o-mini [PARALLEL]
#
# Each question becomes a job in a new workspace directory under the model
# directory: written to N.tmp, then renamed to N.prompt (the rename submits
# it whole). Reading N.response waits for the answer; a read that fails means
# the job failed, and N.error says why. Blank lines are skipped. Exit status:
# 0 when every question got an answer, 1 otherwise.
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

# Collect, in order.
failed=""
for n in $(seq 1 "$total"); do
	echo "[$n] $(sed -n "${n}p" "$list")"
	if answer=$(cat "$job/$n.response" 2>/dev/null); then
		printf '%s\n\n' "$answer"
	else
		failed="$failed $n"
		printf 'FAILED: %s\n\n' "$(cat "$job/$n.error" 2>/dev/null || echo "no $n.error file")"
	fi
done

nfailed=$(echo "$failed" | wc -w)
echo "$((total - nfailed))/$total answered${failed:+, failed:$failed}; files in $job" >&2
[ "$nfailed" -eq 0 ]
