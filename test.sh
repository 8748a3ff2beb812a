#!/usr/bin/env bash
# tpdb test entry point. Installs missing Debian packages, builds `build`,
# runs every meson suite but `slow` there, builds `build-asan` with
# ASan+UBSan and runs the unit suite there, builds `build-tsan` with
# ThreadSanitizer and runs the fsm and threads suites there (the node's
# worker threads: snapshots, streams), and ends with the line
# "N passed, N failed" (exit status non-zero if anything failed).
#   --slow    also run the slow suite
#   --format  also check C formatting with clang-format (one more check)
# TPDB_BUILD_DIR / TPDB_ASAN_BUILD_DIR / TPDB_TSAN_BUILD_DIR override the
# build directories.
# ./quickstart.sh sources this file for tpdb_install_deps and tpdb_build.

TPDB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TPDB_BUILD_DIR=${TPDB_BUILD_DIR:-build}
TPDB_ASAN_BUILD_DIR=${TPDB_ASAN_BUILD_DIR:-build-asan}
TPDB_TSAN_BUILD_DIR=${TPDB_TSAN_BUILD_DIR:-build-tsan}
TPDB_PASSED=0
TPDB_FAILED=0
TPDB_SKIPPED=0
TPDB_NEED_FORMAT=0

tpdb_say() {
    printf '%s\n' "$*"
}

tpdb_warn() {
    printf 'test.sh: %s\n' "$*" >&2
}

# Absolute path of a build dir given relative to the repo root.
tpdb_path() {
    case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "$TPDB_ROOT/$1" ;;
    esac
}

tpdb_packages() {
    printf '%s\n' build-essential meson ninja-build pkg-config \
        libsqlite3-dev sqlite3 libuv1-dev libraft-dev liblz4-dev \
        libcmocka-dev libjansson-dev libedit-dev libsodium-dev \
        groff-base bsdextrautils tmux
    if [[ -d $TPDB_ROOT/tests/sqlite-suite ]]; then
        printf '%s\n' tcl-dev
    fi
    if ((TPDB_NEED_FORMAT)); then
        printf '%s\n' clang-format
    fi
}

# Installs the Debian packages that dpkg does not report as installed; runs
# apt-get only when something is missing.
tpdb_install_deps() {
    local pkg missing=() sudo=()
    if ! command -v dpkg-query >/dev/null 2>&1; then
        tpdb_warn "no dpkg-query: not Debian; assuming dependencies are installed"
        return 0
    fi
    for pkg in $(tpdb_packages); do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null |
            grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        if ! command -v sudo >/dev/null 2>&1; then
            tpdb_warn "missing packages (${missing[*]}) and no sudo"
            return 1
        fi
        sudo=(sudo)
    fi
    tpdb_say "Installing missing packages: ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# tpdb_build DIR [meson -D options...]: configures DIR (setup, or reconfigure
# with the given options when it already exists) and builds it.
tpdb_build() {
    local dir out mode=()
    dir=$(tpdb_path "$1")
    shift
    if [[ -f $dir/meson-private/coredata.dat ]]; then
        mode=(--reconfigure)
    fi
    tpdb_say "== build: $dir $*"
    if ! out=$(meson setup "${mode[@]}" "$dir" "$TPDB_ROOT" "$@" 2>&1); then
        printf '%s\n' "$out" | tail -n 30
        return 1
    fi
    ninja -C "$dir"
}

# Adds meson's summary counts from the log $1 to the totals; prints them.
# Returns 1 if the log has no summary.
tpdb_count() {
    local counts ok xfail fail xpass skip tmo
    counts=$(sed 's/\x1b\[[0-9;]*m//g' "$1" | awk '
        /^Ok:/ { ok += $2; seen = 1 }
        /^Expected Fail:/ { xf += $3 }
        /^Fail:/ { f += $2 }
        /^Unexpected Pass:/ { xp += $3 }
        /^Skipped:/ { sk += $2 }
        /^Timeout:/ { to += $2 }
        END { if (seen) print ok+0, xf+0, f+0, xp+0, sk+0, to+0 }')
    [[ -n $counts ]] || return 1
    read -r ok xfail fail xpass skip tmo <<<"$counts"
    TPDB_PASSED=$((TPDB_PASSED + ok + xfail))
    TPDB_FAILED=$((TPDB_FAILED + fail + xpass + tmo))
    TPDB_SKIPPED=$((TPDB_SKIPPED + skip))
    return 0
}

# tpdb_run_tests LABEL DIR [meson test args...]
tpdb_run_tests() {
    local label=$1 dir log rc before
    dir=$(tpdb_path "$2")
    shift 2
    log=$(mktemp)
    tpdb_say "== $label: meson test $*"
    meson test -C "$dir" --num-processes 2 --print-errorlogs "$@" 2>&1 |
        tee "$log"
    rc=${PIPESTATUS[0]}
    before=$TPDB_FAILED
    if ! tpdb_count "$log"; then
        if grep -q 'No suitable tests defined' "$log" && ((rc == 0)); then
            tpdb_say "== $label: no tests"
        else
            tpdb_warn "$label: meson test failed without a summary (rc $rc)"
            TPDB_FAILED=$((TPDB_FAILED + 1))
        fi
    elif ((rc != 0 && TPDB_FAILED == before)); then
        tpdb_warn "$label: meson test exited $rc"
        TPDB_FAILED=$((TPDB_FAILED + 1))
    fi
    rm -f "$log"
}

# The C files to check: tracked and new ones, minus .clang-format-ignore
# patterns (one shell glob per line, relative to the root).
tpdb_c_files() {
    local f pat skip patterns=()
    if [[ -f $TPDB_ROOT/.clang-format-ignore ]]; then
        while IFS= read -r pat; do
            [[ -n $pat && $pat != \#* ]] && patterns+=("$pat")
        done <"$TPDB_ROOT/.clang-format-ignore"
    fi
    if git -C "$TPDB_ROOT" rev-parse --git-dir >/dev/null 2>&1; then
        git -C "$TPDB_ROOT" ls-files --cached --others --exclude-standard \
            -- '*.c' '*.h'
    else
        (cd "$TPDB_ROOT" && find . -path './build*' -prune -o \
            \( -name '*.c' -o -name '*.h' \) -print | sed 's|^\./||')
    fi | sort -u | while IFS= read -r f; do
        skip=0
        for pat in "${patterns[@]}"; do
            # shellcheck disable=SC2053
            [[ $f == $pat ]] && skip=1
        done
        [[ $skip == 0 && -f $TPDB_ROOT/$f ]] && printf '%s\n' "$f"
    done
}

# One check: every C file is formatted as .clang-format says.
tpdb_check_format() {
    local f bad=()
    tpdb_say "== format: clang-format --dry-run --Werror"
    if ! command -v clang-format >/dev/null 2>&1; then
        tpdb_warn "clang-format is not installed"
        TPDB_FAILED=$((TPDB_FAILED + 1))
        return
    fi
    while IFS= read -r f; do
        if ! clang-format --dry-run --Werror "$TPDB_ROOT/$f" >/dev/null 2>&1
        then
            bad+=("$f")
        fi
    done < <(tpdb_c_files)
    if ((${#bad[@]} > 0)); then
        tpdb_say "Not clang-formatted (run clang-format -i on them):"
        printf '  %s\n' "${bad[@]}"
        TPDB_FAILED=$((TPDB_FAILED + 1))
    else
        TPDB_PASSED=$((TPDB_PASSED + 1))
    fi
}

# The default build with every suite but slow (and slow if $1 is 1), then
# the sanitizer build with the unit suite.
tpdb_test_builds() {
    if tpdb_build "$TPDB_BUILD_DIR"; then
        tpdb_run_tests default "$TPDB_BUILD_DIR" --no-suite slow
        if (($1)); then
            tpdb_run_tests slow "$TPDB_BUILD_DIR" --suite slow
        fi
    else
        tpdb_warn "build of $TPDB_BUILD_DIR failed"
        TPDB_FAILED=$((TPDB_FAILED + 1))
    fi
    if tpdb_build "$TPDB_ASAN_BUILD_DIR" -Db_sanitize=address,undefined \
        -Db_lundef=false; then
        tpdb_run_tests asan "$TPDB_ASAN_BUILD_DIR" --suite unit \
            --timeout-multiplier 3
    else
        tpdb_warn "build of $TPDB_ASAN_BUILD_DIR failed"
        TPDB_FAILED=$((TPDB_FAILED + 1))
    fi
    if tpdb_build "$TPDB_TSAN_BUILD_DIR" -Db_sanitize=thread \
        -Db_lundef=false; then
        # A report ends the reporting process: a node that dies fails its
        # test. tests/tsan.supp says why each suppression is there.
        local tsan="halt_on_error=1 suppressions=$TPDB_ROOT/tests/tsan.supp"
        TSAN_OPTIONS=${TSAN_OPTIONS:-$tsan} \
            tpdb_run_tests tsan "$TPDB_TSAN_BUILD_DIR" --suite fsm \
            --suite threads --timeout-multiplier 4 --num-processes 1
    else
        tpdb_warn "build of $TPDB_TSAN_BUILD_DIR failed"
        TPDB_FAILED=$((TPDB_FAILED + 1))
    fi
}

tpdb_main() {
    local slow=0 format=0 arg
    for arg in "$@"; do
        case $arg in
        --slow) slow=1 ;;
        --format) format=1 TPDB_NEED_FORMAT=1 ;;
        -h | --help)
            sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
            return 0
            ;;
        *)
            tpdb_warn "unknown option $arg"
            return 2
            ;;
        esac
    done
    cd "$TPDB_ROOT" || return 1
    if tpdb_install_deps; then
        tpdb_test_builds "$slow"
    else
        tpdb_warn "installing dependencies failed"
        TPDB_FAILED=$((TPDB_FAILED + 1))
    fi
    if ((format)); then
        tpdb_check_format
    fi
    if ((TPDB_SKIPPED > 0)); then
        tpdb_say "($TPDB_SKIPPED skipped)"
    fi
    tpdb_say "$TPDB_PASSED passed, $TPDB_FAILED failed"
    ((TPDB_FAILED == 0))
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -uo pipefail
    tpdb_main "$@"
fi
