#!/usr/bin/env bash
# tpdb quick start: installs what is missing and builds (with test.sh's
# functions), then runs a 3-node cluster on loopback, each node a stock
# sqlite3 shell with the tpdb extension loaded, and walks through it: write
# on the leader, read on a follower, SIGKILL the leader, write through the
# new leader, restart the killed node and watch it catch up. Needs no
# terminal; cleans up processes and its temp dir on exit; gives up after
# TPDB_QUICKSTART_TIMEOUT seconds (default 120). TPDB_KEEP=1 keeps the dir;
# --no-build uses the existing build in TPDB_BUILD_DIR (default build).
set -euo pipefail

QS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test.sh
source "$QS_ROOT/test.sh"

QS_BUILD=$(tpdb_path "$TPDB_BUILD_DIR")
QS_SQLITE3=${TPDB_SQLITE3:-/usr/bin/sqlite3}
QS_TIMEOUT=${TPDB_QUICKSTART_TIMEOUT:-120}
QS_WORK=
QS_SEQ=0
QS_DEADLINE=0
declare -a QS_PID=() QS_PORT=() QS_URI=()

say() {
    printf '%s\n' "$*"
}

step() {
    printf '\n==> %s\n' "$*"
}

# Prints the end of every node's log, then exits non-zero. From a command
# substitution it also signals the main shell, whose USR1 trap exits.
die() {
    local i
    printf 'quickstart: FAILED: %s\n' "$*" >&2
    for i in 1 2 3; do
        if [[ -n $QS_WORK && -s $QS_WORK/node$i.log ]]; then
            printf -- '--- last lines of node %d output:\n' "$i" >&2
            tail -n 15 "$QS_WORK/node$i.log" >&2
        fi
    done
    if [[ $BASHPID != "$$" ]]; then
        kill -USR1 "$$"
    fi
    exit 1
}

# Kills the nodes (saying which had died, and how), removes the temp dir.
cleanup() {
    local i rc
    for i in 1 2 3; do
        [[ -n ${QS_PID[i]:-} ]] || continue
        if ! kill -KILL "${QS_PID[i]}" 2>/dev/null; then
            rc=0
            wait "${QS_PID[i]}" 2>/dev/null || rc=$?
            if ((rc > 128)); then
                rc="$rc, SIG$(kill -l $((rc - 128)))"
            fi
            say "(node $i had exited with status $rc)" >&2
        fi
        wait "${QS_PID[i]}" 2>/dev/null || true
    done
    exec 7>&- 8>&- 9>&-
    if [[ -n $QS_WORK && ${TPDB_KEEP:-0} != 1 ]]; then
        rm -rf "$QS_WORK"
    elif [[ -n $QS_WORK ]]; then
        say "(kept $QS_WORK)"
    fi
}

# Seconds left before the hard timeout; dies when none are.
time_left() {
    local left=$((QS_DEADLINE - SECONDS))
    ((left > 0)) || die "timed out after ${QS_TIMEOUT}s"
    printf '%s\n' "$left"
}

alive() {
    [[ -n ${QS_PID[$1]:-} ]] && kill -0 "${QS_PID[$1]}" 2>/dev/null
}

# start_node I: runs node I's shell on its fifo (fd 6+I stays open in this
# script, so the shell never sees end of file) with output in its log.
start_node() {
    local i=$1 dir=$QS_WORK/node$1
    mkdir -p "$dir"
    : >>"$QS_WORK/node$i.log"
    if [[ ! -p $QS_WORK/node$i.in ]]; then
        mkfifo "$QS_WORK/node$i.in"
        eval "exec $((6 + i))<>\"\$QS_WORK/node$i.in\""
    fi
    "$QS_SQLITE3" -batch -cmd ".load '$QS_BUILD/ext/libtpdbraft'" \
        -cmd ".open '${QS_URI[i]}'" <"$QS_WORK/node$i.in" \
        >>"$QS_WORK/node$i.log" 2>&1 7>&- 8>&- 9>&- &
    QS_PID[i]=$!
}

# node_sql I SQL: runs SQL (ending in ';') in node I's shell and prints its
# output (errors included), waiting at most 30 s for it (opening a node
# waits up to 15 s for it to be ready).
node_sql() {
    local i=$1 log=$QS_WORK/node$1.log marker off limit
    QS_SEQ=$((QS_SEQ + 1))
    marker="--quickstart-$BASHPID-$QS_SEQ--"
    off=$(stat -c %s "$log")
    printf '%s\n.print %s\n' "$2" "$marker" >&$((6 + i))
    limit=$((SECONDS + 30))
    until tail -c +$((off + 1)) "$log" | grep -qx -- "$marker"; do
        alive "$i" || die "node $i exited"
        ((SECONDS < limit)) || die "node $i did not answer: $2"
        time_left >/dev/null
        sleep 0.05
    done
    tail -c +$((off + 1)) "$log" | sed -n "/^$marker\$/q;p"
}

# node_sql_ok I SQL: like node_sql, but dies if the shell reports an error.
node_sql_ok() {
    local out
    out=$(node_sql "$@")
    if grep -qiE '^(error|parse error|runtime error)' <<<"$out"; then
        die "node $1: $2: $out"
    fi
    printf '%s' "$out${out:+$'\n'}"
}

# wait_for WHAT SECONDS CMD...: polls CMD every 0.1 s until it succeeds.
wait_for() {
    local what=$1 limit=$((SECONDS + $2))
    shift 2
    until "$@"; do
        ((SECONDS < limit)) || die "timed out waiting for $what"
        time_left >/dev/null
        sleep 0.1
    done
}

# leader_agreed NODES...: true when tpdb_status() on every given node names
# the same leader, itself one of them; sets QS_LEADER to its id.
leader_agreed() {
    local i l first=
    for i in "$@"; do
        l=$(node_sql "$i" "SELECT coalesce(json_extract(s, '\$.leader_id'), 0)
  FROM (SELECT tpdb_status() AS s);")
        [[ $l =~ ^[1-9][0-9]*$ ]] || return 1
        [[ -z $first || $l == "$first" ]] || return 1
        first=$l
    done
    QS_LEADER=$first
    [[ " $* " == *" $QS_LEADER "* ]]
}

# rows_are I N: node I's kv table has N rows.
rows_are() {
    [[ $(node_sql "$1" "SELECT count(*) FROM kv;") == "$2" ]]
}

setup_cluster() {
    local i peers=
    QS_WORK=$(mktemp -d "${TMPDIR:-/tmp}/tpdb-quickstart.XXXXXX")
    read -r -a QS_PORT <<<"$("$QS_BUILD/tests/integration/freeport" 3)"
    ((${#QS_PORT[@]} == 3)) || die "could not pick free ports"
    for i in 1 2 3; do
        peers+="${peers:+,}$i@127.0.0.1:${QS_PORT[i - 1]}"
    done
    for i in 1 2 3; do
        QS_URI[i]="file:$QS_WORK/node$i/app.db?vfs=tpdb&node=$i"
        QS_URI[i]+="&bind=127.0.0.1:${QS_PORT[i - 1]}&peers=$peers"
    done
}

# The walk-through proper.
demo() {
    local i f leader old follower out others=()
    step "Starting 3 nodes in $QS_WORK (ports ${QS_PORT[*]})"
    for i in 1 2 3; do
        start_node "$i"
        say "node $i: sqlite3 pid ${QS_PID[i]}, ${QS_URI[i]}"
    done
    for i in 1 2 3; do
        node_sql_ok "$i" "SELECT 'node $i is up';" >/dev/null
        if grep -q '^Error' "$QS_WORK/node$i.log"; then
            die "node $i could not load the extension or open its database"
        fi
    done

    step "Waiting for the nodes to elect a leader"
    wait_for "a leader" 30 leader_agreed 1 2 3
    leader=$QS_LEADER
    say "leader: node $leader"

    step "Creating a table and inserting 3 rows through the leader (node $leader)"
    node_sql_ok "$leader" "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT);
INSERT INTO kv(v) VALUES ('alpha'), ('beta'), ('gamma');"
    for i in 1 2 3; do
        [[ $i == "$leader" ]] || others+=("$i")
    done
    follower=${others[0]}

    step "Reading them on follower node $follower"
    wait_for "node $follower to apply the rows" 20 rows_are "$follower" 3
    node_sql_ok "$follower" "SELECT k, v FROM kv ORDER BY k;"
    say "(and with a plain sqlite3, no extension, on node $follower's file:)"
    timeout 10 "$QS_SQLITE3" -readonly "$QS_WORK/node$follower/app.db" \
        "SELECT k, v FROM kv ORDER BY k;" || die "plain sqlite3 read failed"
    say "(a write on a follower is refused and names the leader:)"
    out=$(node_sql "$follower" "INSERT INTO kv(v) VALUES ('nope');
SELECT tpdb_last_error();")
    printf '%s\n' "$out"
    grep -qi 'error' <<<"$out" || die "node $follower accepted a write"

    step "tpdb_status() on the leader"
    node_sql_ok "$leader" "SELECT tpdb_status();"

    step "Killing the leader (node $leader, pid ${QS_PID[leader]}) with SIGKILL"
    kill -KILL "${QS_PID[leader]}"
    wait "${QS_PID[leader]}" 2>/dev/null || true
    QS_PID[leader]=
    old=$leader
    wait_for "a new leader" 30 leader_agreed "${others[@]}"
    leader=$QS_LEADER
    say "new leader: node $leader"

    step "Writing 2 more rows through the new leader (node $leader)"
    node_sql_ok "$leader" "INSERT INTO kv(v) VALUES ('delta'), ('epsilon');"
    for f in "${others[@]}"; do
        [[ $f == "$leader" ]] || follower=$f
    done

    step "Rows on the remaining follower (node $follower)"
    wait_for "node $follower to apply the rows" 20 rows_are "$follower" 5
    node_sql_ok "$follower" "SELECT k, v FROM kv ORDER BY k;"

    step "Restarting node $old"
    start_node "$old"
    say "node $old: sqlite3 pid ${QS_PID[old]}"
    wait_for "node $old to catch up" 30 rows_are "$old" 5
    node_sql_ok "$old" "SELECT k, v FROM kv ORDER BY k;"
    node_sql_ok "$old" "SELECT 'node $old: role ' ||
  json_extract(tpdb_status(), '\$.role') || ', applied index ' ||
  json_extract(tpdb_status(), '\$.applied_index') || ', leader ' ||
  coalesce(tpdb_leader(), 'none');"
    node_sql_ok "$leader" "SELECT 'node $leader: commit index ' ||
  json_extract(tpdb_status(), '\$.commit_index');"
}

qs_main() {
    local out
    if [[ ${1:-} != --no-build ]]; then
        step "Checking packages and building $QS_BUILD"
        tpdb_install_deps || die "installing packages failed"
        if ! out=$(tpdb_build "$TPDB_BUILD_DIR" 2>&1); then
            printf '%s\n' "$out" | tail -n 30
            die "build failed"
        fi
    fi
    [[ -f $QS_BUILD/ext/libtpdbraft.so ]] ||
        die "the build did not produce $QS_BUILD/ext/libtpdbraft.so"
    cd "$QS_ROOT"
    QS_DEADLINE=$((SECONDS + QS_TIMEOUT))
    trap cleanup EXIT
    trap 'die "interrupted"' INT TERM HUP
    trap 'exit 1' USR1
    setup_cluster
    demo
    step "Done: the cluster survived losing its leader"
}

qs_main "$@"
