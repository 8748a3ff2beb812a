/*
 * Migration between TrashPandaDB page files (.tpdb) and SQLite databases:
 * tpdbImport copies every table of a TPDB file into a new SQLite database,
 * tpdbExport writes a new TPDB file, readable by TrashPandaDB 0.8, from a
 * SQLite database. Both write to a temporary file next to the destination,
 * verify row counts per table and only then rename it into place, so a
 * failure never leaves partial output.
 */
#ifndef TPDB_MIGRATE_H
#define TPDB_MIGRATE_H

#include <stdint.h>
#include <stdio.h>

#include "base/base.h"

/* Progress modes. */
enum {
    TPDB_PROGRESS_AUTO = 0, /* on stderr when stderr is a terminal */
    TPDB_PROGRESS_ALWAYS,   /* on the `progress` stream, whatever it is */
    TPDB_PROGRESS_NEVER     /* silent */
};

struct tpdb_migrate_opts {
    int version;          /* 1 */
    int progress;         /* TPDB_PROGRESS_* */
    FILE *out;            /* progress stream; NULL means stderr */
    unsigned interval_ms; /* minimum time between progress lines; 0: 500 */
    /* Export only: nonzero makes anything TrashPandaDB cannot hold (an
     * index, a DEFAULT) fail the export instead of being left out. */
    int strict;
    FILE *warn; /* export warnings, one line each; NULL means stderr */
};

/* What a successful migration did. */
struct tpdb_migrate_stats {
    uint32_t tables;            /* tables copied */
    uint32_t indexes;           /* indexes created (explicit and UNIQUE) */
    uint64_t rows;              /* rows copied, summed over tables */
    uint32_t indexes_left_out;  /* export: indexes TPDB cannot hold */
    uint32_t defaults_left_out; /* export: DEFAULTs TPDB cannot spell */
};

/* Copies every table of the TPDB file at tpdb_path (and its -wal, whose
 * committed frames are honoured) into a new SQLite database at sqlite_path,
 * in one transaction: columns with their declared types, NOT NULL, DEFAULT
 * and PRIMARY KEY; UNIQUE constraints (an index named `_uq_<table>_<col>`,
 * as TrashPandaDB names a column's, or `_uq_<table>_<a>_<b>`, as tpdbExport
 * names a table constraint's, becomes a UNIQUE constraint); the PRIMARY KEY
 * tpdbExport recorded as the unique index `_pk_<table>` (it becomes the
 * table's PRIMARY KEY again, composite or not, when the table has no PK
 * column or the index is on exactly that column); the other indexes. Rows
 * keep their TPDB rowids. SQLite applies each column's affinity, so a value
 * TrashPandaDB stored against its declared type (an INTEGER in a REAL
 * column) comes back converted; a TEXT PRIMARY KEY with duplicates (which
 * TrashPandaDB allows, defect B6) makes the import fail. Progress, when on,
 * counts rows over all tables (lines "import: done/total rows (p%)").
 * The source is opened read-only. sqlite_path must not exist. opts may be NULL
 * (defaults); stats may be NULL. Row counts are verified per table before
 * the temporary file is renamed to sqlite_path.
 * Returns TPDB_OK, or TPDB_INVALID (bad argument, destination exists),
 * TPDB_NOTFOUND (no such source), TPDB_CORRUPT (source unreadable, message
 * names file and page), TPDB_IOERR, TPDB_NOMEM; on error errmsg
 * (TPDB_ERRMSG_SIZE bytes) says why and no file is left at sqlite_path. */
int tpdbImport(const char *tpdb_path,
               const char *sqlite_path,
               const struct tpdb_migrate_opts *opts,
               struct tpdb_migrate_stats *stats,
               char *errmsg);

/* Writes every ordinary table of the SQLite database at sqlite_path (opened
 * read-only, read in one transaction) into a new TPDB file at tpdb_path:
 * declared types (upper-cased by the format), NOT NULL, DEFAULTs, a
 * single-column PRIMARY KEY as the table's PK column, UNIQUE constraints as
 * `_uq_<table>_<cols>` indexes and explicit indexes on plain columns.
 *
 * Every PRIMARY KEY that is not SQLite's rowid (a composite one, a TEXT
 * one, any key of a WITHOUT ROWID table) also gets the unique index
 * `_pk_<table>` over its columns in key order, because TrashPandaDB
 * enforces a key only through its rowid (defect B6); tpdbImport turns that
 * index back into the PRIMARY KEY. Each DEFAULT is evaluated by SQLite
 * (with the column's affinity) and written as a literal TrashPandaDB parses
 * as the same value: `1e3` in a REAL column becomes `1000.0`, `0x1F`
 * becomes `31`, `TRUE` becomes `1`, `(1 + 2)` becomes `3`.
 *
 * What TrashPandaDB cannot hold is left out, each with a warning line on
 * opts->warn and a count in stats: an index over REAL or BLOB values or a
 * REAL-affinity column (defect B3), an expression or partial index, one
 * whose keys would be too long, one whose name is over 255 bytes; a
 * DEFAULT that is not a constant (CURRENT_TIMESTAMP, random()) or has no
 * literal (an infinite REAL, text holding NUL). With opts->strict the
 * export fails instead, errmsg naming the index or the table and column.
 *
 * Rows are written in rowid order; an INT-typed PRIMARY KEY value is the
 * TPDB rowid, other tables get TPDB rowids 1..n (the library cannot take a
 * chosen rowid), so contents and order survive but gaps in such rowids do
 * not. An AUTOINCREMENT table's sqlite_sequence value becomes its
 * next_rowid, so TrashPandaDB does not reuse rowids SQLite handed out.
 * WITHOUT ROWID tables are exported in key order. Neither keyword has a
 * place in the catalog that TrashPandaDB keeps, so neither is. Virtual
 * tables, views, triggers and generated columns are not exported; a table
 * name over 255 bytes is refused. tpdb_path and its -wal must not exist.
 * Rows are committed every 20,000 rows to bound memory; atomicity comes
 * from the temporary file. Row counts are verified by reopening the new
 * file read-only.
 * Returns TPDB_OK or TPDB_INVALID, TPDB_NOTFOUND (no such source),
 * TPDB_IOERR, TPDB_NOMEM, TPDB_CORRUPT, TPDB_TOOBIG; on error errmsg says
 * why and nothing is left at tpdb_path, its -wal or a temporary path. */
int tpdbExport(const char *sqlite_path,
               const char *tpdb_path,
               const struct tpdb_migrate_opts *opts,
               struct tpdb_migrate_stats *stats,
               char *errmsg);

#endif /* TPDB_MIGRATE_H */
