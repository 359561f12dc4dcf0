#!/bin/bash
# cron-ask.sh: asks a promptfs model directory every question dropped in an
# inbox, and leaves each answer (or the reason it failed) in an outbox.
#
#   cron-ask.sh INBOX OUTBOX JOBS_DIR [SECONDS]
#
# INBOX/NAME.txt is one question. It becomes the job JOBS_DIR/NAME.prompt
# (a workspace of a model directory of the mount, made by the first run),
# and the question moves to OUTBOX/NAME.txt. Once the job has ended, its
# answer is OUTBOX/NAME.answer, or OUTBOX/NAME.failed says why it failed,
# and the job is removed from JOBS_DIR. A job still running after SECONDS
# (default 600) is collected by a later run; a NAME whose job is still in
# JOBS_DIR waits in INBOX. Runs do not overlap (flock on OUTBOX/.lock).
#
# From cron (cron mails what it prints: a summary line when anything was
# done, and one line per failed job):
#
#   */10 * * * *  bash /usr/local/share/doc/promptfs/examples/cron-ask.sh /srv/ask/inbox /srv/ask/outbox /mnt/ai/openai/us/gpt-4o-mini/cron
#
# A job's end is known from its files, never from a read error: NAME.error
# exists exactly when the job failed or was refused, and NAME.meta's status
# is "done" once the answer is complete. (A reader of a .response can get
# EIO from an attempt that was cut, while the job goes on to succeed with a
# retry; so the answer is read only once the job is done.)
#
# Exit status: 0 when every job it collected was answered, 1 when one
# failed or was refused, 2 on wrong arguments.
set -u

if [ $# -lt 3 ] || [ ! -d "$1" ] || [ ! -d "$2" ]; then
	echo "usage: $0 INBOX OUTBOX JOBS_DIR [SECONDS (default 600)]" >&2
	exit 2
fi
inbox=$1 outbox=$2 jobs=$3 seconds=${4:-600}

exec 9>>"$outbox/.lock"
flock -n 9 || exit 0 # the previous run is still collecting

mkdir -p "$jobs" || exit 2

asked=0 answered=0 failed=0 waiting=0

# job_state NAME: done, failed or running.
job_state() {
	if [ -e "$jobs/$1.error" ]; then
		echo failed
	elif grep -q '"status": *"done"' "$jobs/$1.meta" 2>/dev/null; then
		echo "done"
	elif grep -q '"status": *"\(failed\|cancelled\)"' "$jobs/$1.meta" 2>/dev/null; then
		echo failed
	else
		echo running
	fi
}

# fail NAME REASON...: OUTBOX/NAME.failed says why.
fail() {
	local name=$1
	shift
	printf '%s\n' "$@" >"$outbox/$name.failed"
	echo "$name: ${1%%$'\n'*}" >&2
	failed=$((failed + 1))
}

# Submit each new question. cp, then mv onto .prompt: the rename submits the
# whole text at once, and mv reports a refusal (EACCES, EDQUOT, EFBIG,
# EILSEQ, EBADMSG) with its reason in NAME.error.
for question in "$inbox"/*.txt; do
	[ -f "$question" ] || continue
	name=$(basename "$question" .txt)
	[ -e "$jobs/$name.prompt" ] && continue # its previous job is not collected yet
	rm -f "$outbox/$name.answer" "$outbox/$name.failed"
	if ! cp "$question" "$jobs/$name.tmp" || ! error=$(mv "$jobs/$name.tmp" "$jobs/$name.prompt" 2>&1); then
		rm -f "$jobs/$name.tmp"
		if [ -e "$jobs/$name.error" ]; then
			fail "$name" "$(cat "$jobs/$name.error")"
			rm -f "$jobs/$name.error"
		else
			fail "$name" "not submitted: ${error:-cannot copy $question}"
		fi
		mv "$question" "$outbox/$name.txt"
		continue
	fi
	mv "$question" "$outbox/$name.txt"
	asked=$((asked + 1))
done

# Collect every job of JOBS_DIR, this run's and those earlier runs left.
deadline=$((SECONDS + seconds))
for prompt in "$jobs"/*.prompt; do
	[ -f "$prompt" ] || continue
	name=$(basename "$prompt" .prompt)
	while [ "$(job_state "$name")" = running ] && [ "$SECONDS" -lt "$deadline" ]; do
		sleep 1
	done
	case $(job_state "$name") in
	"done")
		if cat "$jobs/$name.response" >"$outbox/$name.answer.tmp"; then
			mv "$outbox/$name.answer.tmp" "$outbox/$name.answer"
			answered=$((answered + 1))
		else
			rm -f "$outbox/$name.answer.tmp"
			fail "$name" "cannot read $jobs/$name.response"
		fi
		;;
	failed)
		if [ -e "$jobs/$name.error" ]; then
			fail "$name" "$(cat "$jobs/$name.error")"
		else
			fail "$name" "failed: $(cat "$jobs/$name.meta")"
		fi
		;;
	*)
		waiting=$((waiting + 1))
		continue
		;;
	esac
	# removing the prompt removes the job's other files with it
	rm -f "$prompt"
done

if [ $((asked + answered + failed + waiting)) -gt 0 ]; then
	echo "cron-ask: $asked asked, $answered answered, $failed failed, $waiting still running"
fi
[ "$failed" -eq 0 ]
