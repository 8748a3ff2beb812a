#!/usr/bin/env bash
# check_install.sh BUILD_DIR PREFIX LIBDIR BINDIR INCLUDEDIR PROGRAM.c:
# `meson install --destdir` of BUILD_DIR into a temporary staging directory
# must yield exactly the versioned libtpdbraft.so with its SONAME links,
# tpdb.h, tpdbraft.pc, and the tpdb and tpdbd programs; PROGRAM.c must then
# compile and link through `pkg-config tpdbraft` against the staged files alone and run.
# The directories are meson's options (LIBDIR, BINDIR and INCLUDEDIR may be
# relative to PREFIX). $CC is the C compiler (default cc).
set -uo pipefail

build=$1
prefix=$2
abs() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s' "$prefix/$1" ;; esac; }
libdir=$(abs "$3")
bindir=$(abs "$4")
includedir=$(abs "$5")
program=$6
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/stage

fail() {
    echo "check_install: $*" >&2
    exit 1
}

if ! meson install -C "$build" --destdir "$stage" --no-rebuild --quiet \
    >"$work/install.log" 2>&1; then
    cat "$work/install.log" >&2
    fail "meson install --destdir failed"
fi

# Exactly these files and links, nothing else.
expect=$(printf '%s\n' "$libdir/libtpdbraft.so.0.1.0" \
    "$libdir/libtpdbraft.so.0" "$libdir/libtpdbraft.so" \
    "$libdir/pkgconfig/tpdbraft.pc" "$includedir/tpdb.h" "$bindir/tpdb" \
    "$bindir/tpdbd" |
    sort)
got=$(cd "$stage" && find . ! -type d | sed 's|^\.||' | sort)
if [[ $got != "$expect" ]]; then
    diff -u --label expected --label installed <(echo "$expect") \
        <(echo "$got") >&2
    fail "meson install yields other files than expected"
fi
lib=$stage$libdir
[[ -f $lib/libtpdbraft.so.0.1.0 && ! -L $lib/libtpdbraft.so.0.1.0 ]] ||
    fail "libtpdbraft.so.0.1.0 is not a regular file"
[[ $(readlink "$lib/libtpdbraft.so.0") == libtpdbraft.so.0.1.0 ]] ||
    fail "libtpdbraft.so.0 does not link to libtpdbraft.so.0.1.0"
[[ $(readlink "$lib/libtpdbraft.so") == libtpdbraft.so.0 ]] ||
    fail "libtpdbraft.so does not link to libtpdbraft.so.0"
readelf -d "$lib/libtpdbraft.so.0.1.0" |
    grep -q 'SONAME.*\[libtpdbraft\.so\.0\]' ||
    fail "the SONAME of libtpdbraft.so.0.1.0 is not libtpdbraft.so.0"
[[ -x $stage$bindir/tpdb ]] || fail "tpdb is not executable"

# Compile and link as a user would, with the staging dir as the sysroot so
# that -I and -L point into it.
flags=$(PKG_CONFIG_PATH=$lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$stage \
    pkg-config --cflags --libs tpdbraft) ||
    fail "pkg-config --cflags --libs tpdbraft failed"
[[ $flags == *"-I$stage$includedir"* && $flags == *"-L$lib"* ]] ||
    fail "pkg-config flags do not point into the staging dir: $flags"
# shellcheck disable=SC2086 # $CC and $flags are word lists.
${CC:-cc} -std=c11 -Wall -Wextra -Werror -o "$work/linktest" "$program" \
    $flags || fail "$program does not compile and link: $flags"
readelf -d "$work/linktest" | grep -q 'NEEDED.*\[libtpdbraft\.so\.0\]' ||
    fail "the program does not need libtpdbraft.so.0"
LD_LIBRARY_PATH=$lib "$work/linktest" || fail "the linked program failed"
echo "check_install: installed and linked through tpdbraft.pc"
