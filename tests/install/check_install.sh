#!/usr/bin/env bash
# check_install.sh BUILD_DIR PREFIX LIBDIR BINDIR INCLUDEDIR SYSCONFDIR MANDIR
#   UNITDIR FREEPORT PROGRAM.c:
# `meson install --destdir` of BUILD_DIR into a temporary staging directory
# must yield exactly the versioned libtpdbraft.so with its SONAME links,
# tpdb.h, tpdbraft.pc, the tpdb and tpdbd programs, tpdbd's systemd unit,
# its environment file and its man page; PROGRAM.c must then compile and
# link through `pkg-config tpdbraft` against the staged files alone and run.
# The unit's command, run as systemd would with the staged environment
# file, must start the staged tpdbd (a node that gets ready and stops on
# SIGTERM with 0) and pass the DNS flags; the man page must render without
# warnings and name every flag `tpdbd --help` lists.
# The directories are meson's options (all but PREFIX and UNITDIR may be
# relative to PREFIX). FREEPORT is tests/integration/freeport. $CC is the C
# compiler (default cc).
set -uo pipefail

build=$1
prefix=$2
abs() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s' "$prefix/$1" ;; esac; }
libdir=$(abs "$3")
bindir=$(abs "$4")
includedir=$(abs "$5")
sysconfdir=$(abs "$6")
mandir=$(abs "$7")
unitdir=$8
freeport=$9
program=${10}
work=$(mktemp -d)
node=
trap '[[ -n $node ]] && kill -9 "$node" 2>/dev/null; rm -rf "$work"' EXIT
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
    "$bindir/tpdbd" "$unitdir/tpdbd.service" "$sysconfdir/tpdbd/env" \
    "$mandir/man8/tpdbd.8" |
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

# The systemd unit and its environment file.
unit=$stage$unitdir/tpdbd.service
envfile=$stage$sysconfdir/tpdbd/env
grep -qx "EnvironmentFile=$sysconfdir/tpdbd/env" "$unit" ||
    fail "the unit does not read $sysconfdir/tpdbd/env"
for var in RAFT_PORT CLIENT_PORT DNS_PEERS DNS_MINIMUM_CLUSTER_SIZE; do
    grep -q "^$var=" "$envfile" || fail "the env file does not set $var"
done
# systemd-analyze (package systemd) only where it is installed.
if command -v systemd-analyze >/dev/null; then
    out=$(systemd-analyze verify --man=no "$unit" 2>&1) ||
        fail "systemd-analyze verify: $out"
    [[ -z $out ]] || fail "systemd-analyze verify: $out"
fi
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
[[ $exec_start == "/bin/sh -c '"*"' $bindir/tpdbd" ]] ||
    fail "ExecStart does not run $bindir/tpdbd through /bin/sh: $exec_start"
# What systemd runs: "$$" unescaped to "$", the script's $0 the program
# (here the staged one), the environment file's variables set.
script=${exec_start#"/bin/sh -c '"}
script=${script%"' $bindir/tpdbd"}
script=${script//'$$'/'$'}
mkdir -p "$work/cred" "$work/state"
(umask 077 && printf '%064d' 7 >"$work/cred/cluster.key")
# run_unit VAR=VALUE...: the unit's command with the staged tpdbd, in an
# environment of the env file's variables, then the given ones.
# Each step execs the next, so a background run_unit's pid is tpdbd's.
run_unit() {
    # shellcheck disable=SC2016 # the inner bash expands them.
    exec env -i PATH="$PATH" LD_LIBRARY_PATH="$lib" \
        CREDENTIALS_DIRECTORY="$work/cred" STATE_DIRECTORY="$work/state" \
        bash -c 'set -a; . "$1"; set +a; s=$2 p=$3; shift 3
            for a in "$@"; do export "$a"; done; exec /bin/sh -c "$s" "$p"' \
        _ "$envfile" "$script" "$stage$bindir/tpdbd" "$@"
}
out=$(run_unit 2>&1)
[[ $? == 1 && $out == "ERROR: --node-id is required (or use --dns-peers so it can be auto-detected)" ]] ||
    fail "the unit without DNS_PEERS or --node-id: $out"
out=$(run_unit DNS_PEERS=no-such-name.test TPDBD_ARGS=--ready-ms=1000 2>&1)
[[ $? == 1 && ${out##*$'\n'} == "ERROR: --dns-peers no-such-name.test: cannot resolve: "* ]] ||
    fail "the unit with DNS_PEERS: $out"
read -r raft client < <("$freeport" 2) || fail "no free ports"
run_unit RAFT_PORT="$raft" CLIENT_PORT="$client" TPDBD_ARGS="--node-id n1" \
    2>"$work/node.log" &
node=$!
for _ in $(seq 600); do
    grep -q " ready: node n1 " "$work/node.log" && break
    kill -0 "$node" 2>/dev/null || break
    sleep 0.1
done
grep -q " ready: node n1 (raft id 5238666064599504064), raft 127.0.0.1:$raft, client 127.0.0.1:$client, data dir $work/state" "$work/node.log" || {
    kill -9 "$node" 2>/dev/null
    cat "$work/node.log" >&2
    fail "the unit's command did not start a node"
}
kill -TERM "$node"
wait "$node"
status=$?
node=
[[ $status == 0 ]] || fail "tpdbd from the unit exited $status on SIGTERM"

# The man page.
man=$stage$mandir/man8/tpdbd.8
# groff-base and bsdextrautils (col) are in test.sh's package list.
if command -v groff >/dev/null && command -v col >/dev/null; then
    warn=$(groff -man -ww -z "$man" 2>&1)
    [[ -z $warn ]] || fail "groff warns about tpdbd.8: $warn"
    text=$(groff -man -Tascii -rLL=300n -rHY=0 "$man" 2>/dev/null | col -b)
    for flag in $("$stage$bindir/tpdbd" --help | grep -oE '^  (-h, )?--[a-z-]+' | grep -oE -- '--[a-z-]+'); do
        grep -qF -- "$flag" <<<"$text" || fail "tpdbd.8 does not document $flag"
    done
fi
echo "check_install: installed and linked through tpdbraft.pc; unit, env file and man page checked"
