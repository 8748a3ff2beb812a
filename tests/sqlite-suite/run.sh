#!/bin/bash
# Runs SQLite's own test suite (Debian's sqlite3 3.40.1 source package) with
# the tpdb VFS as the default VFS, and once more on "unix", and compares
# the failing test cases of each script between the two runs.
#
# It fetches the source package (adding a deb-src entry if needed), builds
# SQLite's `testfixture` with the project's vfs/ sources and
# tpdb_default_vfs.c linked in, runs the scripts of scripts.list in both
# modes (TPDB_SUITE_VFS=unix, then tpdb), and fails when tpdb fails a case
# that "unix" passes, or runs far fewer cases, unless the case failed with
# tpdb's refusal of a non-WAL journal mode or locking_mode=EXCLUSIVE, or
# expected-differences.txt lists it. RESULTS.md says what differs and why.
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

SET=full
OUT=""
JOBS="$(nproc 2>/dev/null || echo 2)"
TIMEOUT=900
MODES="unix tpdb"
ONLY=""
BUILD_ONLY=0
COMPARE_ONLY=0

usage() {
    cat <<EOF
usage: $0 [--quick|--full] [--out DIR] [--jobs N] [--timeout SEC]
          [--only 'SPEC ...'] [--modes 'unix tpdb'] [--build-only]
  --quick        run the scripts marked "quick" in scripts.list
  --full         run every script in scripts.list (default)
  --out DIR      where logs and results go (default $CACHE/out-SET)
  --jobs N       scripts run in parallel (default: number of CPUs)
  --timeout SEC  per-script time limit (default $TIMEOUT)
  --only SPECS   run these specs instead of the list (e.g. 'wal.test')
  --modes M      modes to run (default "$MODES"); with "unix X" the
                 runs are compared, X is tpdb or tpdb-nohooks (hooks NULL)
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
        echo "VFS_HDR = \$(wildcard $ROOT/vfs/*.h)"
        echo "VFS_SRC = \$(wildcard $ROOT/vfs/*.c)"
        echo "VFS_OBJ = \$(patsubst $ROOT/vfs/%.c,vfs-%.o,\$(VFS_SRC))"
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
	$(CC) $(SAN_FLAGS) -o $@ $(SQ_OBJ) shim.o libtpdbsuite.a $(LIBS)
shim.o: $(SHIM) $(VFS_HDR)
	$(PCC) -c $(SHIM) -o $@
# A vfs/ file that does not compile here (another backend in progress) is
# left out with a warning; the link says whether tpdbVfsRegister needed it.
vfs-%.o: $(ROOT)/vfs/%.c $(VFS_HDR)
	$(PCC) -c $< -o $@ 2>$@.err || \
	    { cat $@.err; echo "warning: $< left out" >&2; rm -f $@; }
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

# Fails unless the binary's default VFS is "unix" in the baseline mode and
# "tpdb" in the tpdb mode.
check_default_vfs() {
    local mode got dir
    dir="$(mktemp -d)"
    printf 'puts [lindex [sqlite3_vfs_list] 0]\nexit\n' >"$dir/check.tcl"
    for mode in unix tpdb tpdb-nohooks; do
        got="$(cd "$dir" && TPDB_SUITE_VFS=$mode "$TF" check.tcl 2>&1)" || true
        if [ "$got" != "${mode%-nohooks}" ]; then
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

# Prints a Tcl script that runs test script $1 with `test_syscall
# defaultvfs` answering "unix". syscall.test and mmap2.test skip every case
# unless the default VFS is called "unix"; tpdb is a shim whose system-call
# methods pass through to "unix", so with this they test exactly that.
asunix_wrapper() {
    cat <<EOF
rename test_syscall tpdb_suite_test_syscall
proc test_syscall {args} {
    if {[lindex \$args 0] eq "defaultvfs"} { return unix }
    uplevel 1 [linsert \$args 0 tpdb_suite_test_syscall]
}
set argv0 {$1}
source \$argv0
EOF
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
        asunix_wrapper "$SRC/test/${spec#*:}" >"$dir/asunix.tcl"
        set -- "$dir/asunix.tcl"
    elif [ "${spec#*:}" != "$spec" ]; then
        set -- "$SRC/test/permutations.test" "${spec%%:*}" "${spec#*:}"
    else
        set -- "$SRC/test/$spec"
    fi
    (cd "$dir" && TPDB_SUITE_VFS=$mode timeout -k 10 "$TIMEOUT" "$TF" "$@" \
        </dev/null >log 2>&1) || rc=$?
    echo "$rc $(($(date +%s) - t0))" >"$dir/status"
    # The databases a script leaves behind can be large (bigfile, walbig).
    find "$dir" -mindepth 1 -maxdepth 1 ! -name log ! -name status \
        ! -name asunix.tcl \
        -exec rm -rf {} +
    log "$mode $spec: exit $rc in $(($(date +%s) - t0))s"
}

# Prints, one a line, the failing cases of a finished script: the names
# after "!Failures on these tests:", plus pseudo-cases for a script that
# did not finish, leaked memory or left files open.
failures() {
    local dir="$1" rc
    rc="$(cut -d' ' -f1 "$dir/status" 2>/dev/null || echo missing)"
    if ! grep -q ' errors out of [0-9]* tests' "$dir/log" 2>/dev/null; then
        if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
            echo "(timeout)"
        else
            echo "(no-summary,exit=$rc)"
        fi
    fi
    sed -n 's/^!Failures on these tests: *//p' "$dir/log" 2>/dev/null |
        tr ' ' '\n' | sed '/^$/d'
    grep -q '^Unfreed memory' "$dir/log" 2>/dev/null && echo "(unfreed-memory)"
    grep -q 'files were left open$' "$dir/log" 2>/dev/null &&
        echo "(files-left-open)"
    return 0
}

# Prints "(ran-few-cases)" when the script in $2 finished but ran fewer
# than half the cases the one in $1 ran: a script that skips itself (for
# example because the default VFS is not called "unix") hides everything.
fewer_cases() {
    local a b
    a="$(sed -n 's/^\([0-9]*\) errors out of \([0-9]*\) tests.*/\2/p' "$1/log" 2>/dev/null)"
    b="$(sed -n 's/^\([0-9]*\) errors out of \([0-9]*\) tests.*/\2/p' "$2/log" 2>/dev/null)"
    if [ -n "$a" ] && [ -n "$b" ] && [ $((b * 2)) -lt "$a" ]; then
        echo "(ran-few-cases)"
    fi
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

# Succeeds when case $2 of the tpdb log in $1 failed with tpdb's own
# refusal of a rollback journal mode or of locking_mode=EXCLUSIVE; for a
# script that stopped early, when the Tcl error that stopped it was one.
refused() {
    case "$2" in
    "(no-summary,exit=1)")
        tail -n 60 "$1/log" | grep -qE "^[^ ]*: $REFUSAL\$" ;;
    *)
        case_output "$1" "$2" | grep -qE "$REFUSAL" ;;
    esac
}

# Succeeds when expected-differences.txt lists case $2 of spec $1.
expected() {
    local spec="$1" case="$2" s c
    while read -r s c _; do
        case "$s" in ''|'#'*) continue ;; esac
        # shellcheck disable=SC2053
        if [[ "$spec" == $s && "$case" == $c ]]; then
            return 0
        fi
    done <"$EXPECTED"
    return 1
}

# Compares both modes script by script; writes $OUT/summary.txt.
compare() {
    local spec u t c mode unexpected=0 nexp=0 nref=0 same=0 diffs=0
    local sum="$OUT/summary.txt"
    : >"$sum"
    local other="${MODES#unix }"
    if [ "${MODES%% *}" != unix ] || [ "$other" = "$MODES" ] ||
        [ "${other#* }" != "$other" ]; then
        for mode in $MODES; do
            while read -r spec; do
                printf '%s %s: %s\n' "$mode" "$spec" \
                    "$(failures "$OUT/$mode/${spec//:/_}" | tr '\n' ' ')"
            done < <(specs)
        done | tee "$sum"
        return 0
    fi
    while read -r spec; do
        u="$(failures "$OUT/unix/${spec//:/_}" | sort -u)"
        t="$( (failures "$OUT/$other/${spec//:/_}"
               fewer_cases "$OUT/unix/${spec//:/_}" \
                   "$OUT/$other/${spec//:/_}") | sort -u)"
        local new gone line
        new="$(comm -13 <(echo "$u") <(echo "$t") | sed '/^$/d')"
        gone="$(comm -23 <(echo "$u") <(echo "$t") | sed '/^$/d')"
        if [ -z "$new" ] && [ -z "$gone" ]; then
            same=$((same + 1))
            printf 'SAME        %s (%s unix failures)\n' "$spec" \
                "$(echo "$u" | sed '/^$/d' | wc -l)" >>"$sum"
            continue
        fi
        diffs=$((diffs + 1))
        for c in $new; do
            if refused "$OUT/$other/${spec//:/_}" "$c"; then
                line="REFUSED    "
                nref=$((nref + 1))
            elif expected "$spec" "$c"; then
                line="EXPECTED   "
                nexp=$((nexp + 1))
            else
                line="UNEXPECTED "
                unexpected=$((unexpected + 1))
            fi
            printf '%s %s %s (fails on %s only)\n' "$line" "$spec" "$c" \
                "$other" >>"$sum"
        done
        for c in $gone; do
            printf 'INFO        %s %s (fails on unix only)\n' "$spec" "$c" >>"$sum"
        done
    done < <(specs)
    {
        echo "scripts: $((same + diffs)), identical: $same, differing: $diffs"
        echo "cases failing on $other only: $((nref + nexp + unexpected))" \
            "(refused by design $nref, listed as expected $nexp," \
            "unexpected $unexpected)"
    } >>"$sum"
    cat "$sum"
    [ "$unexpected" = 0 ]
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
    export TPDB_SUITE_OUT="$OUT" TPDB_SUITE_TIMEOUT="$TIMEOUT"
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
