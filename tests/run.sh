#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds with warnings as
# errors, runs the unit tests, the fake cloud's self-test and the mounted
# filesystem tests, then the unit and mounted tests again under ASan+UBSan
# and under ThreadSanitizer. Ends with one line "N passed, N failed"; exits
# non-zero on any failure.
set -u
cd "$(dirname "$0")/.."
top=$(pwd)
. tests/lib/deps.sh

passed=0
failed=0
python=/usr/bin/python3

note() { printf '\n== %s\n' "$*"; }
count() { passed=$((passed + $1)); failed=$((failed + $2)); }

if ! promptfs_install_deps; then
	echo "0 passed, 1 failed"
	exit 1
fi
# cobc and man for the install and batch-example tests, promtool for the
# /.metrics test, which skip (saying so) without them
promptfs_install_test_deps || true

# Counts cmocka cases from meson's test log: a binary that crashed before
# reporting counts as one failure.
unit_counts() {
	"$python" - "$1" <<'PY'
import json, re, sys
passed = failed = 0
for line in open(sys.argv[1]):
    t = json.loads(line)
    out = t.get("stdout", "")
    ok = len(re.findall(r"^\[       OK \]", out, re.M))
    bad = len(re.findall(r"^\[  FAILED  \] (?!\d+ test)", out, re.M))
    if t["result"] == "SKIP":
        continue
    if t["result"] != "OK" and bad == 0:
        bad = 1
    passed += ok
    failed += bad
print(passed, failed)
PY
}

pytest_counts() {
	"$python" - "$1" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print(0, 1)
    sys.exit()
suites = [root] if root.tag == "testsuite" else list(root)
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
sk = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - sk, f)
PY
}

# build DIR [meson options...]: configures and builds; a failed build is
# one failure.
build() {
	local dir=$1
	shift
	if [ -d "$dir" ]; then
		meson setup --reconfigure "$dir" "$@" >"$dir.setup.log" 2>&1
	else
		meson setup "$dir" "$@" >"$dir.setup.log" 2>&1
	fi || { cat "$dir.setup.log"; count 0 1; return 1; }
	if ! ninja -C "$dir" >"$dir.build.log" 2>&1; then
		cat "$dir.build.log"
		count 0 1
		return 1
	fi
}

# run_suite DIR LABEL [WRAPPER...]: unit tests, then mounted tests with
# DIR's daemon, both run through WRAPPER (a command prefix) if given.
run_suite() {
	local dir=$1 label=$2 p f
	shift 2
	note "$label: unit tests"
	"$@" meson test -C "$dir" --suite unit --print-errorlogs >"$dir.unit.log" 2>&1
	read -r p f <<<"$(unit_counts "$dir/meson-logs/testlog.json")"
	grep -E '^ *[0-9]+/[0-9]+ ' "$dir.unit.log"
	[ "$f" -gt 0 ] && cat "$dir.unit.log"
	echo "unit: $p passed, $f failed"
	count "$p" "$f"

	note "$label: mounted filesystem tests"
	PROMPTFS_BIN="$top/$dir/fs/promptfs" "$@" "$python" -m pytest tests/integration \
		-q -p no:cacheprovider --junitxml="$dir/integration.xml" -o junit_family=xunit2
	read -r p f <<<"$(pytest_counts "$dir/integration.xml")"
	count "$p" "$f"
}

note "C style (.clang-format)"
c_files=$(git ls-files 'fs/*.[ch]' 'backends/*.[ch]' 'mountopts/*.[ch]' 'tests/unit/*.c' 'tests/fuzz/*.c' 2>/dev/null)
if ! command -v clang-format >/dev/null; then
	echo "clang-format not installed: style not checked"
elif [ -z "$c_files" ]; then
	echo "not a git checkout: style not checked"
elif clang-format --dry-run --Werror $c_files 2>build-format.log; then
	echo "style: every C file matches .clang-format"
	count 1 0
else
	head -n 40 build-format.log
	echo "style: run clang-format -i on the files above"
	count 0 1
fi

note "fake cloud self-test"
if "$python" tests/fakecloud/selftest.py >build-selftest.log 2>&1; then
	n=$(grep -Eo '^Ran [0-9]+' build-selftest.log | grep -Eo '[0-9]+')
	echo "fake cloud: ${n:-1} passed"
	count "${n:-1}" 0
else
	cat build-selftest.log
	count 0 1
fi

note "build (warnings are errors)"
if build build-test -Dwerror=true -Dbuildtype=debugoptimized; then
	run_suite build-test "release build"
fi

note "build with ASan+UBSan"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
if build build-asan -Dwerror=true -Dbuildtype=debug -Db_sanitize=address,undefined \
	-Db_lundef=false; then
	run_suite build-asan "sanitizers"
fi

note "build with ThreadSanitizer"
# halt_on_error: a daemon stops at its first report (the mounted test that
# runs it fails and shows the report, conftest.py); exit status 66 for the
# unit tests. tests/tsan.supp says why each suppression is not our bug.
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$top/tests/tsan.supp"
# TSan's fixed memory layout needs ASLR of at most 28 bits; kernels with
# vm.mmap_rnd_bits above that make it die with "unexpected memory
# mapping". setarch -R turns randomisation off for the run and its children
# (the daemons), without changing the machine's sysctl.
tsan_wrap=()
if setarch "$(uname -m)" -R true 2>/dev/null; then
	tsan_wrap=(setarch "$(uname -m)" -R)
fi
if build build-tsan -Dwerror=true -Dbuildtype=debugoptimized -Db_sanitize=thread \
	-Db_lundef=false; then
	run_suite build-tsan "ThreadSanitizer" "${tsan_wrap[@]}"
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
