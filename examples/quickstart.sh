#!/bin/bash
# promptfs in a minute: installs what is missing, builds, mounts a backend on
# a temporary directory, walks through the basics, then cleans up.
#
#   ./examples/quickstart.sh
#
# Backend, first match wins:
#   OPENAI_API_KEY set          -> the OpenAI API (openai/us/gpt-4o-mini)
#   Ollama answering locally    -> local/localhost/<first model it lists>
#                                  (OLLAMA_HOST, default http://127.0.0.1:11434)
#   otherwise                   -> the local simulated cloud of the test suite,
#                                  which echoes prompts back (no account needed)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

if [ -t 1 ]; then BOLD=$'\e[1m'; DIM=$'\e[2m'; OFF=$'\e[0m'; else BOLD='' DIM='' OFF=''; fi

WORK='' MNT='' D='' FS_PID='' FAKE_PID=''

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	cd /
	if [ "$rc" -ne 0 ] && [ -n "${D:-}" ] && mountpoint -q "$MNT"; then
		for f in "$MNT/$D"/*.error; do
			[ -f "$f" ] && [ "${f##*/}" != bad.error ] &&
				{ echo "--- ${f##*/}:"; cat "$f"; } >&2
		done
	fi
	if [ -n "$MNT" ] && mountpoint -q "$MNT"; then
		for _ in $(seq 1 50); do
			fusermount3 -u "$MNT" 2>/dev/null && break
			sleep 0.1
		done
		mountpoint -q "$MNT" && fusermount3 -uz "$MNT"
	fi
	if [ -n "$FS_PID" ]; then
		for _ in $(seq 1 100); do kill -0 "$FS_PID" 2>/dev/null || break; sleep 0.1; done
		kill "$FS_PID" 2>/dev/null
		wait "$FS_PID" 2>/dev/null
	fi
	if [ -n "$FAKE_PID" ]; then
		kill "$FAKE_PID" 2>/dev/null
		wait "$FAKE_PID" 2>/dev/null
	fi
	if [ "$rc" -ne 0 ] && [ -n "$WORK" ]; then
		echo "quickstart failed (exit $rc)" >&2
		for f in "$WORK/build.log" "$WORK/promptfs.log" "$WORK/fakecloud.log"; do
			[ -s "$f" ] && { echo "--- last lines of $(basename "$f"):" >&2; tail -n 15 "$f" >&2; }
		done
	fi
	[ -n "$WORK" ] && rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '\n%s# %s%s\n' "$DIM" "$1" "$OFF"; }
# Prints a command, then runs it from the mountpoint.
show() { printf '%s$ %s%s\n' "$BOLD" "$1" "$OFF"; eval "$1" 2>&1; }

# --- 1. dependencies and build ------------------------------------------------
WORK=$(mktemp -d /tmp/promptfs-quickstart.XXXXXX)
chmod 755 "$WORK"
MNT=$WORK/mnt
mkdir "$MNT"

# shellcheck source=tests/lib/deps.sh
. tests/lib/deps.sh
promptfs_install_deps
echo "building promptfs (meson, ninja)..."
[ -f build/build.ninja ] || meson setup build >"$WORK/build.log" 2>&1
ninja -C build >>"$WORK/build.log" 2>&1
PROMPTFS=$ROOT/build/fs/promptfs

# --- 2. the backend -----------------------------------------------------------
OLLAMA=${OLLAMA_HOST:-http://127.0.0.1:11434}
case $OLLAMA in *://*) ;; *) OLLAMA=http://$OLLAMA ;; esac
OLLAMA=${OLLAMA%/}

ollama_first_model() {
	local body
	body=$(curl -fsS -m 1 "$OLLAMA/api/tags" 2>/dev/null) ||
		body=$(curl -fsS -m 1 "$OLLAMA/v1/models" 2>/dev/null) || return 1
	printf '%s' "$body" | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
names = [m.get("name") or m.get("model") for m in d.get("models", [])] + \
        [m.get("id") for m in d.get("data", [])]
names = [n for n in names if n]
if not names:
    sys.exit(1)
print(names[0])' 2>/dev/null
}

if [ -n "${OPENAI_API_KEY:-}" ]; then
	BACKEND=openai CLOUD=openai REGION=us MODEL=gpt-4o-mini
	# no "auth": the daemon reads OPENAI_API_KEY from its environment
	REGION_JSON='"us": {"geo": "us", "models": {"gpt-4o-mini": {}}}'
elif MODEL=$(ollama_first_model); then
	BACKEND=ollama CLOUD=local REGION=localhost
	REGION_JSON="\"localhost\": {\"geo\": \"local\", \"endpoint\": \"$OLLAMA/v1\", \"models\": {\"$MODEL\": {}}}"
	unset OPENAI_API_KEY
else
	BACKEND=simulator CLOUD=simulator REGION=local MODEL=gpt-4o-mini
	/usr/bin/python3 tests/fakecloud/fakecloud.py --port 0 --port-file "$WORK/fakecloud.port" \
		--latency 0.3 --log "$WORK/fakecloud.log" >/dev/null 2>"$WORK/fakecloud.err" &
	FAKE_PID=$!
	for _ in $(seq 1 100); do
		[ -s "$WORK/fakecloud.port" ] && break
		kill -0 "$FAKE_PID" 2>/dev/null || { cat "$WORK/fakecloud.err" >&2; exit 1; }
		sleep 0.1
	done
	PORT=$(cat "$WORK/fakecloud.port")
	REGION_JSON="\"local\": {\"geo\": \"local\", \"endpoint\": \"http://127.0.0.1:$PORT/v1\", \"models\": {\"$MODEL\": {}}}"
fi

cat >"$WORK/clouds.json" <<EOF
{ "clouds": { "$CLOUD": { "provider": "openai", "regions": { $REGION_JSON } } } }
EOF

case $BACKEND in
openai) echo "${BOLD}Backend: the OpenAI API, model $MODEL (key taken from OPENAI_API_KEY).${OFF}" ;;
ollama) echo "${BOLD}Backend: the local Ollama at $OLLAMA, model $MODEL.${OFF}" ;;
simulator)
	cat <<EOF
${BOLD}=====================================================================
 SIMULATED BACKEND: no OPENAI_API_KEY and no local Ollama were found.
 Answers come from tests/fakecloud, a local simulator on port $PORT
 that echoes each prompt back ("echo: ..."). NOT a real model.
 Set OPENAI_API_KEY or start Ollama to talk to a real one.
=====================================================================${OFF}
EOF
	;;
esac

# --- 3. mount -----------------------------------------------------------------
cd "$WORK"
step "a config and a mount, in a temporary directory ($WORK)"
show "cat clouds.json"
printf '%s$ promptfs -f -o state_dir=state clouds.json mnt &%s\n' "$BOLD" "$OFF"
"$PROMPTFS" -f -o state_dir=state clouds.json mnt >promptfs.log 2>&1 &
FS_PID=$!
for _ in $(seq 1 150); do
	mountpoint -q "$MNT" && break
	kill -0 "$FS_PID" 2>/dev/null || { FS_PID=; cat "$WORK/promptfs.log" >&2; exit 1; }
	sleep 0.1
done
mountpoint -q "$MNT"
show "cd mnt"
D=$CLOUD/$REGION/$MODEL

# --- 4. the tour --------------------------------------------------------------
step "clouds, regions and models are directories"
show "find . -maxdepth 3 -type d"

step "ask a question: write a .prompt, read the .response (blocks until the answer is complete)"
show "echo 'What is the capital of France?' > $D/q.prompt"
show "cat $D/q.response"
show "cat $D/q.meta"

step "a JSON prompt carries a system message and parameters"
show "echo '{\"messages\":[{\"role\":\"system\",\"content\":\"Answer in one word.\"},{\"role\":\"user\",\"content\":\"Name a primary colour.\"}],\"max_tokens\":20}' > $D/colour.prompt"
show "cat $D/colour.response; echo"

step "batch: 20 prompts, 8 writers; each written as N.tmp then renamed to N.prompt"
show "mkdir $D/batch"
show "seq 1 20 | xargs -P 8 -I{} sh -c 'echo \"What is {} times {}? Reply with the number only.\" > $D/batch/{}.tmp && mv $D/batch/{}.tmp $D/batch/{}.prompt'"
show "for i in {1..20}; do a=\$(cat $D/batch/\$i.response) && echo \"\$i: \$a\"; done | tail -n 3"

step "any other file is an ordinary file, stored in state_dir and never sent anywhere"
show "echo 'compare these answers with another model' > $D/notes.txt"
show "cat $D/notes.txt"
show "ls -C $D"

if [ "$BACKEND" = simulator ]; then
	step "a job that fails: reading its .response fails with EIO, .error says why"
	show "echo 'Summarize [[fault:status code=400 message=\"prompt is too long for this model\"]]' > $D/bad.prompt"
	show "cat $D/bad.response || echo \"cat exit status \$?\""
	show "cat $D/bad.error"
else
	step "(the failing-job demo needs the simulator; skipped on a real backend)"
fi

# --- 5. unmount ---------------------------------------------------------------
step "unmount"
show "cd .."
show "fusermount3 -u mnt"
for _ in $(seq 1 100); do kill -0 "$FS_PID" 2>/dev/null || break; sleep 0.1; done
wait "$FS_PID" || { echo "promptfs exited with status $?" >&2; FS_PID=; exit 1; }
FS_PID=
echo "done: unmounted, temporary files removed."
