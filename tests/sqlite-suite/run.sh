#!/bin/bash
# Runs SQLite's own test suite (Debian's sqlite3 3.40.1 source package) with
# the real extension, libtpdbraft.so, loaded and its "tpdb" VFS as the
# default VFS (node and Raft included: each test directory gets the default
# single-node cluster, as a user gets with `.load` and `vfs=tpdb`), and once
# more on "unix" in WAL mode, and compares the failing test cases of each
# script between the two runs.
#
# It fetches the source package (adding a deb-src entry if needed), builds
# SQLite's `testfixture` with tpdb_default_vfs.c (and, for the stub mode, the
# project's vfs/ sources) linked in, runs the scripts of scripts.list in
# both modes (TPDB_SUITE_VFS=unix-wal, then tpdb), and fails when tpdb fails
# a case that "unix" passes, hangs, crashes or runs far fewer cases, unless
# the case failed with tpdb's refusal of a non-WAL journal mode or
# locking_mode=EXCLUSIVE, or expected-differences.txt lists it. RESULTS.md
# says what differs and why.
# Exit status: 0 no unexpected difference, 1 unexpected differences, 2 usage
# or build error, 77 (meson's "skip") when the source cannot be obtained.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="${TPDB_SOURCE_ROOT:-$(cd "$HERE/../.." && pwd)}"
CACHE="${TPDB_SQLITE_CACHE:-$HOME/.cache/tpdb-sqlite-src}"
SQLITE_UPSTREAM=3.40.1
SRC="$CACHE/sqlite3-$SQLITE_UPSTREAM"
BLD="$CACHE/bld"
# TPDB_SUITE_SANITIZE=1 builds the project's sources (not SQLite's) with
# ASan and UBSan, in objects of their own.
SAN_FLAGS=""
OBJ="$BLD/tpdb-obj"
if [ -n "${TPDB_SUITE_SANITIZE:-}" ]; then
    SAN_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer"
    OBJ="$BLD/tpdb-obj-san"
    # SQLite's tests check for leaks themselves; Tcl's exit leaks by design.
    export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
fi
TF="$OBJ/testfixture"
LIST="$HERE/scripts.list"
# The errors vfs/vfs.c gives for PRAGMAs it refuses by design.
REFUSAL='tpdb: (replicated databases must stay in WAL mode|locking_mode=EXCLUSIVE would bypass replication)'

EXPECTED="$HERE/expected-differences.txt"
# Cases that fail only because another process writes through a node it
# does not run (multi-process writers, work in progress elsewhere): reported
# as PENDING, not failures, until that work lands.
PENDING="$HERE/pending-multiprocess.txt"
# Cases that fail on tpdb because of a product defect found by this suite
# and not fixed yet, each with its reason: reported as KNOWN, not failures,
# so that the list is the to-do list. Never a place for a difference by
# design (expected-differences.txt) or for anything not understood.
KNOWN="$HERE/known-defects.txt"

SET=full
OUT=""
JOBS="$(nproc 2>/dev/null || echo 2)"
TIMEOUT=900
MODES="unix-wal tpdb"
# The library the "tpdb" mode loads.
LIB="${TPDB_SUITE_LIB:-${TPDB_BUILD_ROOT:-$ROOT/build}/ext/libtpdbraft.so}"
ONLY=""
BUILD_ONLY=0
COMPARE_ONLY=0

usage() {
    cat <<EOF
usage: $0 [--quick|--full] [--out DIR] [--jobs N] [--timeout SEC]
          [--only 'SPEC ...'] [--modes 'unix-wal tpdb'] [--lib PATH]
          [--build-only]
  --quick        run the scripts marked "quick" in scripts.list
  --full         run every script in scripts.list (default)
  --out DIR      where logs and results go (default $CACHE/out-SET)
  --jobs N       scripts run in parallel (default: number of CPUs)
  --timeout SEC  per-script time limit (default $TIMEOUT)
  --only SPECS   run these specs instead of the list (e.g. 'wal.test')
  --modes M      modes to run (default "$MODES"); with two modes the
                 second is compared with the first (the baseline). Modes:
                 unix, unix-wal (unix, connections switched to WAL as the
                 extension does), tpdb (the real libtpdbraft.so), tpdb-stub
                 (vfs/ with accept-all hooks), tpdb-nohooks (hooks NULL)
  --lib PATH     libtpdbraft.so for the tpdb mode (default $LIB)
  --build-only   fetch and build testfixture, run nothing
  --compare-only compare the logs already in --out, run nothing
Environment: TPDB_SQLITE_CACHE (source and build cache), TPDB_SOURCE_ROOT.
EOF
}

log() { printf '[sqlite-suite] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
skip() { log "skipped: $*"; exit 77; }

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
        --quick) SET=quick ;;
        --full) SET=full ;;
        --out) OUT="$2"; shift ;;
        --jobs) JOBS="$2"; shift ;;
        --timeout) TIMEOUT="$2"; shift ;;
        --only) ONLY="$2"; shift ;;
        --modes) MODES="$2"; shift ;;
        --lib) LIB="$2"; shift ;;
        --build-only) BUILD_ONLY=1 ;;
        --compare-only) COMPARE_ONLY=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
        esac
        shift
    done
    [ -n "$OUT" ] || OUT="$CACHE/out-$SET"
}

# Runs a command as root, through sudo when not root already.
as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo "$@"
    else
        return 1
    fi
}

# Writes a deb-src entry for every enabled Debian deb entry, in a file of
# our own, so that `apt-get source` can see the source packages.
add_deb_src() {
    local list=/etc/apt/sources.list.d/tpdb-sqlite-src.sources
    local tmp
    tmp="$(mktemp)"
    for f in /etc/apt/sources.list.d/*.sources; do
        if [ ! -f "$f" ] || [ "$f" = "$list" ]; then
            continue
        fi
        awk 'BEGIN { RS = ""; ORS = "\n\n" }
             /URIs:[^\n]*debian/ && /Types:[ a-z-]*deb([ \n]|$)/ {
                 sub(/Types:[^\n]*/, "Types: deb-src"); print }' "$f" >>"$tmp"
    done
    if [ -f /etc/apt/sources.list ]; then
        grep -E '^deb[[:space:]].*debian' /etc/apt/sources.list |
            sed -e 's/^deb[[:space:]]/deb-src /' >"$tmp.list" || true
        if [ -s "$tmp.list" ]; then
            as_root cp "$tmp.list" /etc/apt/sources.list.d/tpdb-sqlite-src.list
        fi
        rm -f "$tmp.list"
    fi
    [ -s "$tmp" ] && as_root cp "$tmp" "$list"
    rm -f "$tmp"
    as_root apt-get update -qq
}

# Downloads and unpacks the source package into $CACHE once.
fetch_source() {
    if [ -f "$SRC/test/tester.tcl" ] && [ -f "$SRC/debian/changelog" ]; then
        return
    fi
    command -v apt-get >/dev/null || skip "no apt-get to fetch the source"
    command -v dpkg-source >/dev/null ||
        as_root apt-get install -y -qq dpkg-dev || skip "cannot install dpkg-dev"
    local ver
    ver="$(dpkg-query -W -f='${Version}' libsqlite3-0 2>/dev/null || true)"
    if ! apt-cache showsrc sqlite3 2>/dev/null | grep -q "^Version: $ver\$"; then
        add_deb_src || skip "cannot add a deb-src entry (need root)"
    fi
    mkdir -p "$CACHE"
    (cd "$CACHE" && { apt-get source -qq "sqlite3=$ver" ||
                      apt-get source -qq sqlite3; }) >&2 ||
        skip "apt-get source sqlite3 failed"
    [ -f "$SRC/test/tester.tcl" ] ||
        die "source unpacked, but $SRC/test/tester.tcl is missing"
    grep -qx "$SQLITE_UPSTREAM" "$SRC/VERSION" ||
        die "$SRC is not SQLite $SQLITE_UPSTREAM"
}

ensure_tools() {
    local need=""
    [ -f /usr/include/tcl8.6/tcl.h ] || need="$need tcl-dev"
    command -v make >/dev/null || need="$need make"
    command -v gcc >/dev/null || need="$need gcc"
    [ -f /usr/include/zlib.h ] || need="$need zlib1g-dev"
    if [ -n "$need" ]; then
        log "installing$need"
        # shellcheck disable=SC2086
        as_root apt-get install -y -qq $need >&2 || skip "cannot install$need"
    fi
}

# Value of a variable of SQLite's generated Makefile.
mkvar() {
    make -s -C "$BLD" -f Makefile -f "$HERE/printvar.mk" "tpdb-print-$1"
}

# Writes $OBJ/Makefile: SQLite's testfixture sources compiled one object
# each (so only changed files rebuild), the project's vfs/ sources in an
# archive (the linker takes only what tpdbVfsRegister needs), and the link.
write_makefile() {
    local srcs objs="" o s
    srcs="$(mkvar TESTFIXTURE_SRC)"
    {
        echo "# Generated by tests/sqlite-suite/run.sh; do not edit."
        echo "TCC = $(mkvar TCC) -I$BLD -DSQLITE_EXTRA_INIT=tpdbSuiteInit"
        echo "TFLAGS = -DSQLITE_NO_SYNC=1 $(mkvar TEMP_STORE) $(mkvar TESTFIXTURE_FLAGS)"
        echo "LIBS = $(mkvar LIBTCL) $(mkvar TLIBS) -lpthread -ldl"
        echo "PCC = \$(CC) -std=c11 -O2 -g -D_GNU_SOURCE $SAN_FLAGS -I$BLD -I$ROOT"
        echo "SAN_FLAGS = $SAN_FLAGS"
        echo "VFS_HDR = \$(wildcard $ROOT/vfs/*.h $ROOT/base/*.h)"
        echo "VFS_SRC = \$(wildcard $ROOT/vfs/*.c)"
        echo "BASE_SRC = \$(wildcard $ROOT/base/*.c)"
        echo "VFS_OBJ = \$(patsubst $ROOT/vfs/%.c,vfs-%.o,\$(VFS_SRC)) \$(patsubst $ROOT/base/%.c,base-%.o,\$(BASE_SRC))"
        for s in $srcs; do
            case "$s" in /*) ;; *) s="$BLD/$s" ;; esac
            o="sq-$(basename "$s" .c).o"
            objs="$objs $o"
            # shellcheck disable=SC2016
            printf '%s: %s\n\t$(TCC) $(TFLAGS) -c %s -o $@\n' "$o" "$s" "$s"
        done
        echo "SQ_OBJ =$objs"
        cat <<'EOF'
testfixture: $(SQ_OBJ) shim.o libtpdbsuite.a
	$(CC) $(SAN_FLAGS) -Wl,--export-dynamic -o $@ $(SQ_OBJ) shim.o libtpdbsuite.a $(LIBS)
shim.o: $(SHIM) $(VFS_HDR)
	$(PCC) -c $(SHIM) -o $@
# A vfs/ file that does not compile here (another backend in progress) is
# left out with a warning; the link says whether tpdbVfsRegister needed it.
vfs-%.o: $(ROOT)/vfs/%.c $(VFS_HDR)
	$(PCC) -c $< -o $@ 2>$@.err || \
	    { cat $@.err; echo "warning: $< left out" >&2; rm -f $@; }
# base/ (errors, allocator, logs) is what every vfs/ file stands on.
base-%.o: $(ROOT)/base/%.c $(VFS_HDR)
	$(PCC) -c $< -o $@
libtpdbsuite.a: $(VFS_OBJ)
	rm -f $@ && ar rcs $@ $$(for o in $(VFS_OBJ); do [ ! -f $$o ] || echo $$o; done)
EOF
    } >"$OBJ/Makefile.new"
    mv "$OBJ/Makefile.new" "$OBJ/Makefile"
}

build_testfixture() {
    if [ ! -f "$BLD/Makefile" ]; then
        mkdir -p "$BLD"
        log "configuring SQLite $SQLITE_UPSTREAM in $BLD"
        (cd "$BLD" && "$SRC/configure" --enable-threadsafe \
            --with-tcl=/usr/lib/"$(gcc -print-multiarch)"/tcl8.6 \
            --disable-readline --disable-editline CFLAGS="-O2 -g" \
            >configure.log 2>&1) || die "configure failed: $BLD/configure.log"
    fi
    [ -f "$BLD/sqlite3.c" ] || make -C "$BLD" -s sqlite3.c >/dev/null ||
        die "cannot generate sqlite3.c"
    mkdir -p "$OBJ"
    write_makefile
    log "building testfixture"
    make -C "$OBJ" -s -j"$JOBS" ROOT="$ROOT" \
        SHIM="$HERE/tpdb_default_vfs.c" testfixture >"$OBJ/build.log" 2>&1 ||
        { tail -30 "$OBJ/build.log" >&2; die "testfixture build failed"; }
    check_default_vfs
}

# Fails unless the binary's default VFS is "unix" in the unix modes and
# "tpdb" in the others.
check_default_vfs() {
    local mode got dir want
    dir="$(mktemp -d)"
    printf 'puts [lindex [sqlite3_vfs_list] 0]\nexit\n' >"$dir/check.tcl"
    for mode in unix unix-wal tpdb tpdb-stub tpdb-nohooks; do
        want="${mode%%-*}"
        if [ "$mode" = tpdb ] && [ ! -f "$LIB" ]; then
            continue
        fi
        got="$(cd "$dir" && TPDB_SUITE_VFS=$mode TPDB_SUITE_LIB="$LIB" \
            "$TF" check.tcl 2>&1)" || true
        if [ "$got" != "$want" ]; then
            rm -rf "$dir"
            die "TPDB_SUITE_VFS=$mode: default VFS is '$got'"
        fi
    done
    rm -rf "$dir"
}

# Prints the specs to run: "file.test" or "permutation:file.test".
specs() {
    if [ -n "$ONLY" ]; then
        # shellcheck disable=SC2086
        printf '%s\n' $ONLY
    elif [ "$SET" = quick ]; then
        awk '$1 == "quick" { print $2 }' "$LIST"
    else
        awk '$1 == "quick" || $1 == "full" { print $2 }' "$LIST"
    fi
}

# Prints the Tcl script every run goes through: it sources test script $1
# with the arguments $2. In the tpdb mode, SQLite's end-of-script checks
# (finalize_testing in tester.tcl: files left open, unfreed memory) run
# after the nodes of the process stopped, since a node keeps connections of
# its own open for the life of the process. With $3 = asunix, `test_syscall
# defaultvfs` answers "unix": syscall.test and mmap2.test skip every case
# unless the default VFS is called "unix"; tpdb is a shim whose system-call
# methods pass through to "unix", so with this they test exactly that.
wrapper() {
    cat <<EOF
set argv {$2}
set argc [llength \$argv]
set argv0 {$1}
EOF
    cat <<'EOF'
if {$::env(TPDB_SUITE_VFS) eq "tpdb"} {
    proc tpdb_suite_stop {} {
        foreach h {db db2 db3} { catch {$h close} }
        sqlite_orig tpdb_suite_db :memory:
        tpdb_suite_db eval {SELECT tpdb_suite_shutdown()}
        tpdb_suite_db close
    }
    rename source tpdb_suite_source
    proc source {args} {
        set rc [catch {uplevel 1 [linsert $args 0 tpdb_suite_source]} res opt]
        if {[file tail [lindex $args end]] eq "tester.tcl"
            && [info procs tpdb_suite_finalize] eq ""} {
            rename finalize_testing tpdb_suite_finalize
            proc finalize_testing {} {
                tpdb_suite_stop
                uplevel 1 tpdb_suite_finalize
            }
            # permutations.test checks for open files after each script.
            rename do_test tpdb_suite_do_test
            proc do_test {name args} {
                if {[string match *-closeallfiles $name]} { tpdb_suite_stop }
                uplevel 1 [linsert $args 0 tpdb_suite_do_test $name]
            }
        }
        return -options $opt $res
    }
}
EOF
    if [ "${3:-}" = asunix ]; then
        cat <<'EOF'
rename test_syscall tpdb_suite_test_syscall
proc test_syscall {args} {
    if {[lindex $args 0] eq "defaultvfs"} { return unix }
    uplevel 1 [linsert $args 0 tpdb_suite_test_syscall]
}
EOF
    fi
    echo 'source $argv0'
}

# Runs one spec in one mode in a directory of its own; called through
# xargs as "run.sh --run-one MODE SPEC".
run_one() {
    local mode="$1" spec="$2" dir rc=0 t0
    dir="$OUT/$mode/${spec//:/_}"
    rm -rf "$dir"
    mkdir -p "$dir"
    t0=$(date +%s)
    if [ "${spec%%:*}" = asunix ]; then
        wrapper "$SRC/test/${spec#*:}" "" asunix >"$dir/run.tcl"
    elif [ "${spec#*:}" != "$spec" ]; then
        wrapper "$SRC/test/permutations.test" "${spec%%:*} ${spec#*:}" \
            >"$dir/run.tcl"
    else
        wrapper "$SRC/test/$spec" "" >"$dir/run.tcl"
    fi
    # A hang is a failure (exit 124 or 137: "(timeout)"), and so is a crash
    # (no summary line). The library's own log lines (stderr, ERROR by
    # default) would land in the middle of "NAME... Ok" lines and hide
    # passing cases: off unless TPDB_SUITE_LOG_LEVEL asks for them.
    (cd "$dir" && TPDB_SUITE_VFS=$mode TPDB_SUITE_LIB="$LIB" \
        TPDB_LOG_LEVEL="${TPDB_SUITE_LOG_LEVEL:-none}" \
        timeout -k 10 "$TIMEOUT" "$TF" run.tcl </dev/null >log 2>&1) || rc=$?
    echo "$rc $(($(date +%s) - t0))" >"$dir/status"
    # The databases a script leaves behind can be large (bigfile, walbig).
    find "$dir" -mindepth 1 -maxdepth 1 ! -name log ! -name status \
        ! -name run.tcl \
        -exec rm -rf {} +
    log "$mode $spec: exit $rc in $(($(date +%s) - t0))s"
}

# Prints, one a line, the cases of the script run in $1 that passed ("NAME...
# Ok" lines).
ok_cases() {
    [ -f "$1/log" ] || return 0
    sed -n 's/^\([^ ]*\)\.\.\. Ok$/\1/p' "$1/log" | sort -u
}

# Prints the cases the log of $1 started, passed or not.
run_cases() {
    [ -f "$1/log" ] || return 0
    sed -n 's/^\([^ ]*\)\.\.\.\( Ok\)\{0,1\}$/\1/p' "$1/log" | sort -u
}

# Prints pseudo-cases for how the run in $1 ended: a hang or a crash (both
# failures), no summary line, leaked memory or files left open.
end_cases() {
    local dir="$1" rc
    rc="$(cut -d' ' -f1 "$dir/status" 2>/dev/null || echo missing)"
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        echo "(timeout)"
    elif [ "$rc" = missing ] || [ "$rc" -ge 128 ] ||
        grep -q 'dumped core' "$dir/log" 2>/dev/null; then
        echo "(crash,exit=$rc)"
    elif ! grep -q ' errors out of [0-9]* tests' "$dir/log" 2>/dev/null; then
        echo "(no-summary,exit=$rc)"
    fi
    grep -q '^Unfreed memory' "$dir/log" 2>/dev/null && echo "(unfreed-memory)"
    grep -q 'files were left open$' "$dir/log" 2>/dev/null &&
        echo "(files-left-open)"
    return 0
}

# Prints what the log of $1 says for case $2: from its "NAME..." line to
# the next case's line.
case_output() {
    awk -v name="$2" '
        index($0, name "...") == 1 { on = 1; print; next }
        on && /^[^ ]+\.\.\.( Ok)?$/ { exit }
        on { print }' "$1/log"
}

# Succeeds when case $2 of the log in $1 failed with tpdb's own refusal of
# a rollback journal mode or of locking_mode=EXCLUSIVE; for "(not-run)"
# and "(no-summary...)", when the Tcl error that stopped the script was one.
refused() {
    case "$2" in
    "(not-run)"|"(no-summary,"*)
        tail -n 60 "$1/log" | grep -qE "^[^ ]*: $REFUSAL\$" ;;
    *)
        case_output "$1" "$2" | grep -qE "$REFUSAL" ;;
    esac
}

# Succeeds when file $3 lists case $2 of spec $1.
listed() {
    local spec="$1" case="$2" s c
    [ -f "$3" ] || return 1
    while read -r s c _; do
        case "$s" in ''|'#'*) continue ;; esac
        # shellcheck disable=SC2053
        if [[ "$spec" == $s && "$case" == $c ]]; then
            return 0
        fi
    done <"$3"
    return 1
}

# Prints the class of case $2 of spec $1 that passed on the baseline and
# not in the run in $3.
classify() {
    case "$2" in
    "(timeout)"|"(crash,"*)
        echo UNEXPECTED; return ;;
    esac
    if refused "$3" "$2"; then
        echo REFUSED
    elif listed "$1" "$2" "$EXPECTED"; then
        echo EXPECTED
    elif listed "$1" "$2" "$PENDING"; then
        echo PENDING
    elif listed "$1" "$2" "$KNOWN"; then
        echo KNOWN
    else
        echo UNEXPECTED
    fi
}

# Compares the second mode with the first (the baseline) script by script:
# a case that passed on the baseline and did not pass (failed, or never ran
# because the script stopped) on the other is a difference, and so is a
# hang, crash or leak the baseline did not have. Writes $OUT/summary.txt.
compare() {
    local spec c cls line sum="$OUT/summary.txt"
    local base="${MODES%% *}" other="${MODES#* }"
    local same=0 diffs=0 nb=0 no=0
    declare -A count=([REFUSED]=0 [EXPECTED]=0 [PENDING]=0 [KNOWN]=0
        [UNEXPECTED]=0)
    : >"$sum"
    if [ "$other" = "$MODES" ] || [ "${other#* }" != "$other" ]; then
        for mode in $MODES; do
            while read -r spec; do
                printf '%s %s: %s passed, ends %s\n' "$mode" "$spec" \
                    "$(ok_cases "$OUT/$mode/${spec//:/_}" | wc -l)" \
                    "$(end_cases "$OUT/$mode/${spec//:/_}" | tr '\n' ' ')"
            done < <(specs)
        done | tee "$sum"
        return 0
    fi
    while read -r spec; do
        local b="$OUT/$base/${spec//:/_}" t="$OUT/$other/${spec//:/_}"
        local bok tok lost failed notrun ends gone
        bok="$(ok_cases "$b")"
        tok="$(ok_cases "$t")"
        nb=$((nb + $(echo "$bok" | sed '/^$/d' | wc -l)))
        no=$((no + $(echo "$tok" | sed '/^$/d' | wc -l)))
        lost="$(comm -23 <(echo "$bok") <(echo "$tok") | sed '/^$/d')"
        failed="$(comm -12 <(echo "$lost") <(run_cases "$t") | sed '/^$/d')"
        notrun="$(comm -23 <(echo "$lost") <(run_cases "$t") | sed '/^$/d' |
            wc -l)"
        ends="$(comm -13 <(end_cases "$b" | sort) <(end_cases "$t" | sort) |
            sed '/^$/d')"
        gone="$(comm -13 <(echo "$bok") <(echo "$tok") | sed '/^$/d' | wc -l)"
        if [ -z "$failed" ] && [ "$notrun" = 0 ] && [ -z "$ends" ]; then
            same=$((same + 1))
            printf 'SAME        %s (%s cases pass on both)\n' "$spec" \
                "$(echo "$bok" | sed '/^$/d' | wc -l)" >>"$sum"
            continue
        fi
        diffs=$((diffs + 1))
        for c in $failed $ends; do
            cls="$(classify "$spec" "$c" "$t")"
            count[$cls]=$((count[$cls] + 1))
            printf '%-11s %s %s (passes on %s only)\n' "$cls" "$spec" "$c" \
                "$base" >>"$sum"
        done
        if [ "$notrun" != 0 ]; then
            cls="$(classify "$spec" "(not-run)" "$t")"
            count[$cls]=$((count[$cls] + notrun))
            line="$( (grep -v '^[[:space:]"]' "$t/log" 2>/dev/null || true) |
                (grep -E '^[^ ]*: |^Error: ' || true) | tail -n 1 |
                cut -c1-120)"
            printf '%-11s %s (not-run) %s cases passing on %s never ran: the script stopped (%s)\n' \
                "$cls" "$spec" "$notrun" "$base" "$line" >>"$sum"
        fi
        if [ "$gone" != 0 ]; then
            printf 'INFO        %s %s cases pass on %s only\n' "$spec" "$gone" \
                "$other" >>"$sum"
        fi
    done < <(specs)
    {
        echo "scripts: $((same + diffs)), identical: $same, differing: $diffs"
        echo "cases passing: $nb on $base, $no on $other"
        echo "cases passing on $base only: refused by design ${count[REFUSED]}," \
            "listed as expected ${count[EXPECTED]}, pending multi-process" \
            "writers ${count[PENDING]}, known defects ${count[KNOWN]}," \
            "unexpected ${count[UNEXPECTED]}"
    } >>"$sum"
    cat "$sum"
    [ "${count[UNEXPECTED]}" = 0 ]
}

main() {
    parse_args "$@"
    if [ "$COMPARE_ONLY" = 1 ]; then
        compare
        exit $?
    fi
    mkdir -p "$CACHE"
    # One run at a time per cache: another build dir's run would relink
    # testfixture under this one's feet.
    exec 9>"$CACHE/.lock"
    flock 9
    grep -qs '^int tpdbVfsRegister(' "$ROOT"/vfs/*.c ||
        skip "no vfs/*.c defines tpdbVfsRegister yet"
    fetch_source
    ensure_tools
    build_testfixture
    [ "$BUILD_ONLY" = 0 ] || exit 0
    mkdir -p "$OUT"
    local t0 mode spec
    t0=$(date +%s)
    log "running $(specs | wc -l) scripts x {$MODES}, $JOBS at a time"
    # The scripts run in processes of their own (xargs): --lib reaches them
    # only through the environment.
    export TPDB_SUITE_OUT="$OUT" TPDB_SUITE_TIMEOUT="$TIMEOUT" \
        TPDB_SUITE_LIB="$LIB"
    # Longest first would be better; the list is ordered by hand that way.
    for spec in $(specs); do
        for mode in $MODES; do
            printf '%s %s\n' "$mode" "$spec"
        done
    done | xargs -P "$JOBS" -L 1 "$0" --run-one-env
    log "all scripts ran in $(($(date +%s) - t0))s"
    compare || exit 1
}

if [ "${1:-}" = "--run-one-env" ]; then
    # Re-entered by xargs: the settings come from the exported environment.
    OUT="$TPDB_SUITE_OUT"
    TIMEOUT="$TPDB_SUITE_TIMEOUT"
    run_one "$2" "$3"
    exit 0
fi
main "$@"
exit $?
