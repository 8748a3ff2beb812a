/*
 * Internals of the tpdb_table virtual table (tpdb_vtab.h), shared by its
 * files: tpdb_vtab.c (registration, xConnect, xBestIndex, tpdb_attach),
 * tpdb_vtab_file.c (shared file handles, when they are held, replication
 * hooks, value conversion), tpdb_vtab_cursor.c (scans) and
 * tpdb_vtab_write.c (xUpdate, transactions, savepoints).
 */
#ifndef TPDB_VTAB_INT_H
#define TPDB_VTAB_INT_H

#include <sqlite3.h>
#include <stdint.h>

#include "vfs/tpdbfile/tpdbfile.h"

/* One file as used by one connection: every virtual table of the
 * connection on that file shares it. The handle `f` is open for the whole
 * life of the struct, except for a file in a node's data directory
 * (`transient`): there it is open only while `holds` > 0, so that the
 * node's state machine can write replicated commits into the file between
 * statements. */
struct sharedFile {
    struct sharedFile *next;
    char *key; /* realpath of the file */
    int rdonly;
    int transient;       /* open only while held (a node's data directory) */
    struct tpdb_file *f; /* NULL while a transient file is not held */
    unsigned refs;       /* virtual tables (and tpdb_attach calls) using it */
    unsigned holds;      /* open cursors, begun tables, planning calls */
    unsigned gen; /* bumped by every write call and reopen: cursors reseek */
    int txn;      /* a TPDB transaction is open */
    int broken;   /* the transaction was dropped by a failed statement */
    uint64_t changes; /* successful writes in the transaction */
    uint64_t *sp;     /* `changes` when each open savepoint began */
    int nsp;
    int spcap;
    void *repl; /* replication state, NULL when not replicated */
};

/* Module client data: one per connection. */
struct registry {
    sqlite3 *db;
    struct sharedFile *files;
};

enum { VTAB_MODE_AUTO = 0, VTAB_MODE_RW, VTAB_MODE_RO };

struct vtab {
    sqlite3_vtab base;
    struct registry *reg;
    struct sharedFile *sf;
    char *table;
    unsigned ncols;
    int in_txn; /* xBegin was called and holds the file */
};

/* Query plans, in idxNum's low 4 bits; the high bits carry flags (rowid
 * range: RANGE_LO, RANGE_HI, in argv order) or the number of index columns
 * with equality constraints. idxStr names "rowid" or the index. */
enum {
    VTAB_PLAN_FULL = 0,
    VTAB_PLAN_ROWID_EQ = 1,
    VTAB_PLAN_ROWID_RANGE = 2,
    VTAB_PLAN_INDEX_EQ = 3
};
enum { VTAB_RANGE_LO = 1, VTAB_RANGE_HI = 2 };
#define VTAB_MAX_INDEX_EQ 4

/* ---- tpdb_vtab_file.c ---------------------------------------------------- */

/* Parses a MODE argument (NULL or '' = auto, 'rw', 'ro'); 0 on success. */
int vtabParseMode(const char *s, int *mode);

/* Finds or opens the connection's shared file of `path` and returns it in
 * *out with a new reference AND a hold (the handle is open): the caller
 * drops the hold with vtabFileUnhold and the reference with
 * vtabFileRelease. Errors are SQLITE_* codes with *pzErr an
 * sqlite3_malloc'ed message. */
int vtabFileAcquire(struct registry *reg,
                    const char *path,
                    int mode,
                    struct sharedFile **out,
                    char **pzErr);

/* Drops a reference; the last one frees the shared file. */
void vtabFileRelease(struct registry *reg, struct sharedFile *sf);

/* Takes a hold: reopens a transient file's handle if it is closed (waiting
 * a little while the node writes into the file: SQLITE_BUSY after that).
 * A reopened handle sees the file's latest committed state. On error
 * *pzErr (pzErr must not be NULL) gets an sqlite3_malloc'ed message. */
int vtabFileHold(struct sharedFile *sf, char **pzErr);

/* Drops a hold; a transient file's handle is closed when none is left and
 * no TPDB transaction is open. */
void vtabFileUnhold(struct sharedFile *sf);

/* The module's client-data destructor: frees every shared file. */
void vtabRegistryDestroy(void *arg);

/* Maps a TPDB_* code to an SQLITE_* code. */
int vtabSqliteRc(int rc);

/* Sets the SQL result to a TPDB value (TEXT/BLOB bytes are copied). */
void vtabResultValue(sqlite3_context *ctx, const struct tpdb_value *v);

/* The integral value of a REAL when it is exactly an int64; 0 on success. */
int vtabRealToInt64(double d, int64_t *out);

/* Parses a whole string as a decimal int64; 0 on success. */
int vtabParseInt64(const char *s, size_t len, int64_t *out);

/* Converts an SQLite value; `int_affinity` applies INTEGER affinity as
 * SQLite would. TEXT/BLOB bytes point into the SQLite value. */
void vtabValueFromSqlite(sqlite3_value *v,
                         int int_affinity,
                         struct tpdb_value *out);

/* The integer a rowid bound or key compares as, or -1 when the value is no
 * integer. */
int vtabBoundValue(sqlite3_value *v, int64_t *out);

/* ---- tpdb_vtab.c --------------------------------------------------------- */

/* The table's catalog entry, or NULL (with zErrMsg set) when it is gone or
 * was altered. The file must be held; the pointer is valid while it is and
 * until the next write. */
const struct tpdb_table *vtabTable(struct vtab *vt);

/* Sets zErrMsg to "what: <the handle's message>" and returns the SQLITE_*
 * code of rc. The file must be held. */
int vtabError(struct vtab *vt, int rc, const char *what);

/* ---- tpdb_vtab_cursor.c: the module's scan methods ------------------------
 * The sqlite3_module methods of the same names; xOpen takes a hold on the
 * file, xClose drops it. */

int vtabOpen(sqlite3_vtab *base, sqlite3_vtab_cursor **out);
int vtabClose(sqlite3_vtab_cursor *base);
int vtabFilter(sqlite3_vtab_cursor *base,
               int idxNum,
               const char *idxStr,
               int argc,
               sqlite3_value **argv);
int vtabNext(sqlite3_vtab_cursor *base);
int vtabEof(sqlite3_vtab_cursor *base);
int vtabColumn(sqlite3_vtab_cursor *base, sqlite3_context *ctx, int i);
int vtabRowid(sqlite3_vtab_cursor *base, sqlite3_int64 *rowid);

/* ---- tpdb_vtab_write.c: the module's write and transaction methods -------
 * The sqlite3_module methods of the same names; xBegin takes a hold on the
 * file that xCommit or xRollback drops. */

int vtabUpdate(sqlite3_vtab *base,
               int argc,
               sqlite3_value **argv,
               sqlite3_int64 *rowid);
int vtabBegin(sqlite3_vtab *base);
int vtabSync(sqlite3_vtab *base);
int vtabCommit(sqlite3_vtab *base);
int vtabRollback(sqlite3_vtab *base);
int vtabSavepoint(sqlite3_vtab *base, int i);
int vtabRelease(sqlite3_vtab *base, int i);
int vtabRollbackTo(sqlite3_vtab *base, int i);

#endif /* TPDB_VTAB_INT_H */
