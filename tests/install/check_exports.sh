#!/usr/bin/env bash
# check_exports.sh LIBRARY HEADER: fails unless the dynamic symbols LIBRARY
# defines are exactly the functions HEADER declares with TPDB_PUBLIC (the
# public API of ext/tpdb.h and the SQLite extension entry point).
set -uo pipefail

lib=$1
header=$2
want=$(mktemp)
got=$(mktemp)
trap 'rm -f "$want" "$got" "$got.nm"' EXIT

# A declaration starts "TPDB_PUBLIC <type> <name>(" on one line.
sed -n 's/^TPDB_PUBLIC .*[ *]\([A-Za-z_][A-Za-z_0-9]*\)(.*/\1/p' "$header" |
    sort -u >"$want"
if [[ ! -s $want ]]; then
    echo "check_exports: no TPDB_PUBLIC functions found in $header" >&2
    exit 1
fi
if ! nm -D --defined-only "$lib" >"$got.nm"; then
    echo "check_exports: nm -D --defined-only $lib failed" >&2
    exit 1
fi
# "address type name[@version]"; the name is the last field.
awk 'NF >= 3 { sub(/@.*/, "", $NF); print $NF }' "$got.nm" | sort -u >"$got"
if ! diff -u --label "declared in $header" --label "exported by $lib" \
    "$want" "$got"; then
    echo "check_exports: $lib must export exactly the TPDB_PUBLIC" \
        "functions of $header (see ext/tpdbraft.map)" >&2
    exit 1
fi
echo "check_exports: $(wc -l <"$want") symbols, as declared"
