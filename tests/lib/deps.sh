# Installs, with apt-get, the Debian 12 packages promptfs needs to build
# and test, when any is missing. Sourced by tests/run.sh and
# examples/quickstart.sh.

PROMPTFS_PACKAGES="gcc pkg-config meson ninja-build libfuse3-dev fuse3 \
libcurl4-openssl-dev libjansson-dev libssl-dev zlib1g-dev libcmocka-dev \
python3 python3-pytest python3-cryptography attr openssl curl clang-format git \
logrotate"

# Tools that only the tests use, not the build or the quickstart: the
# GnuCOBOL compiler for examples/askai.cbl and gawk beside mawk for
# examples/meta-report.awk (test_batch_examples.py), and man
# for `man --warnings` on promptfs(8) (test_install.py).
PROMPTFS_TEST_PACKAGES="gnucobol gawk man-db"
# The same, installed without the packages they recommend: promtool
# (package prometheus) for test_metrics.py, whose recommended node
# exporter is a daemon the tests do not need.
PROMPTFS_TEST_PACKAGES_BARE="prometheus"

# promptfs_missing_packages [PACKAGES]: those of PACKAGES (default: the
# build's) that are not installed.
promptfs_missing_packages() {
	local missing="" pkg
	for pkg in ${1:-$PROMPTFS_PACKAGES}; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" ||
			missing="$missing $pkg"
	done
	echo "$missing"
}

promptfs_install_deps() {
	local missing
	missing=$(promptfs_missing_packages)
	[ -z "$missing" ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing packages:$missing (run as root, or: sudo apt-get install$missing)" >&2
		return 1
	fi
	echo "installing:$missing"
	apt-get update -qq >/dev/null &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
}

# The test-only tools. One that cannot be installed is said on stderr; the
# tests that need it skip, saying why.
promptfs_install_test_deps() {
	local missing bare
	missing=$(promptfs_missing_packages "$PROMPTFS_TEST_PACKAGES")
	bare=$(promptfs_missing_packages "$PROMPTFS_TEST_PACKAGES_BARE")
	[ -z "$missing$bare" ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing test tools:$missing$bare (run as root, or: sudo apt-get install$missing;" \
			"sudo apt-get install --no-install-recommends$bare)" >&2
		return 1
	fi
	echo "installing test tools:$missing$bare"
	apt-get update -qq >/dev/null
	{ [ -z "$missing" ] ||
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; } &&
		{ [ -z "$bare" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $bare >/dev/null; } ||
		{ echo "could not install$missing$bare: the tests that need it will skip" >&2; return 1; }
}
