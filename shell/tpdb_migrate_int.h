/*
 * Internals shared by the migration modules: tpdb_migrate.c (progress
 * lines, temporary paths, fsync and rename, SQLite error mapping, row
 * counts), tpdb_import.c (tpdbImport) and tpdb_export.c (tpdbExport).
 * Not installed; only shell/tpdb_migrate.c, tpdb_import.c and
 * tpdb_export.c include it.
 */
#ifndef TPDB_MIGRATE_INT_H
#define TPDB_MIGRATE_INT_H

#include <stdint.h>
#include <stdio.h>

#include <sqlite3.h>

#include "shell/tpdb_migrate.h"
#include "vfs/tpdbfile/tpdbfile.h"

/* Progress of one migration, counted in rows. Owned by the caller, usually
 * on its stack; `what` must outlive it. */
struct migrateProgress {
    int on;               /* print at all */
    int tty;              /* out is a terminal: rewrite one line */
    FILE *out;            /* not owned */
    unsigned interval_ms; /* minimum time between lines */
    uint64_t last_ms;     /* when the last line was printed */
    uint64_t done;        /* rows done so far */
    uint64_t total;       /* rows expected; 0 when unknown */
    const char *what;     /* "import" or "export" */
};

/* Initialises p from opts (NULL: defaults, see struct tpdb_migrate_opts)
 * with the label `what` (a static string). Cannot fail. */
void migrateProgressInit(struct migrateProgress *p,
                         const struct tpdb_migrate_opts *opts,
                         const char *what);

/* Counts one row done; prints at most one line per interval, if on. */
void migrateProgressTick(struct migrateProgress *p);

/* Prints the final line (ending in '\n'), if on. */
void migrateProgressEnd(struct migrateProgress *p);

/* Whether path exists (stat succeeds). */
int migratePathExists(const char *path);

/* Returns path followed by suffix, tpdb_malloc'ed (caller tpdb_frees), or
 * NULL when out of memory. */
char *migratePathWith(const char *path, const char *suffix);

/* Returns the temporary path "<dest>.<tag>-<pid>.tmp", tpdb_malloc'ed
 * (caller tpdb_frees), or NULL when out of memory. */
char *migrateTempPath(const char *dest, const char *tag);

/* fsyncs the file (dir 0) or directory (dir 1) at path. Returns TPDB_OK or
 * TPDB_IOERR, with errmsg naming the path. */
int migrateFsyncPath(const char *path, int dir, char *errmsg);

/* fsyncs the directory holding path. Allocates nothing, so that it cannot
 * fail for lack of memory after a rename. Returns TPDB_OK, TPDB_INVALID
 * (directory name over PATH_MAX) or TPDB_IOERR. */
int migrateFsyncParent(const char *path, char *errmsg);

/* rename(2) from over to. Returns TPDB_OK or TPDB_IOERR. */
int migrateRename(const char *from, const char *to, char *errmsg);

/* Writes "<what>: <db's last error>" into errmsg and returns the TPDB code
 * matching db's last error: TPDB_NOMEM, TPDB_IOERR, TPDB_CORRUPT, else
 * TPDB_INVALID. */
int migrateSqliteErr(sqlite3 *db, char *errmsg, const char *what);

/* Prepares and steps exactly one SQL statement; text after it other than
 * blanks and ';' is refused (TPDB_INVALID), so text from a file cannot
 * smuggle in a second statement. Returns TPDB_OK or a code from
 * migrateSqliteErr(). */
int migrateExecOne(sqlite3 *db, const char *sql, char *errmsg);

/* Returns count(*) of table in db, or -1 with errmsg set. */
int64_t migrateSqliteCount(sqlite3 *db, const char *table, char *errmsg);

/* Counts the rows of the TPDB table by walking its tree without decoding
 * rows. Returns TPDB_OK or a tpdb_cursor_* error (tpdb_file_errmsg(f) says
 * why); on error *n holds the rows counted before it. */
int migrateTpdbCount(struct tpdb_file *f, const char *table, uint64_t *n);

/* ---- DEFAULTs for TrashPandaDB (tpdb_export_dflt.c) -------------------- */

/* Opens the in-memory scratch database migrateDefaultConvert() evaluates
 * defaults in; on TPDB_OK the caller owns *db (sqlite3_close). Returns
 * TPDB_OK, TPDB_NOMEM or TPDB_IOERR. */
int migrateDefaultScratch(sqlite3 **db, char *errmsg);

/* Converts the DEFAULT `dflt` (SQL text as PRAGMA table_info gives it) of a
 * column declared `type` (may be NULL) into a literal TrashPandaDB 0.8
 * parses as the value SQLite would store: a decimal integer, a decimal
 * float without exponent that reads back as the same double, a quoted
 * string, X'hex', NULL, or for INT64_MIN an expression of integers. scratch
 * is a connection from migrateDefaultScratch(); its tables are left as
 * found. On TPDB_OK *out is the literal, sqlite3_malloc'ed (the caller
 * sqlite3_frees it). TPDB_INVALID when no literal means that value (a
 * default that changes between uses, an infinite REAL, text holding NUL,
 * over 65535 bytes), with errmsg saying why; TPDB_NOMEM. */
int migrateDefaultConvert(sqlite3 *scratch,
                          const char *type,
                          const char *dflt,
                          char **out,
                          char *errmsg);

/* Whether a declared type has REAL affinity by SQLite's rules: every value
 * SQLite stores in such a column is REAL, which a TPDB index cannot hold. */
int migrateTypeIsReal(const char *type);

#endif /* TPDB_MIGRATE_INT_H */
