/*
 * The native TPDB page format (TrashPandaDB 0.8.x) as a storage backend:
 * open a page file and its "<path>-wal", read the catalog, scan and seek the
 * table and index B+ trees, decode rows, and write crash-safely through the
 * format's own WAL protocol (frames, commit sentinel, fdatasync, checkpoint).
 * The format is described in docs/tpdb-format.md (shared docs).
 *
 * Key order (defect B2 of TrashPandaDB): INTEGER keys (rowids and index
 * values) are stored big-endian without a sign flip and compare bytewise, so
 * this library orders them as the file does: as unsigned 64-bit patterns,
 * 0 .. INT64_MAX first, then INT64_MIN .. -1. Every seek and scan uses it.
 */
#ifndef TPDB_TPDBFILE_H
#define TPDB_TPDBFILE_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "vfs/txn.h"

/* Page size of the format, and the WAL file suffix. */
#define TPDB_FILE_PAGE_SIZE 4096
#define TPDB_FILE_WAL_SUFFIX "-wal"

/* Flags for tpdb_file_open(). */
enum {
    TPDB_FILE_RDONLY = 0x1, /* never write either file */
    TPDB_FILE_CREATE = 0x2  /* create a fresh file if missing (read-write) */
};

/* Value types: the row codec's tags; TPDB_VNULL has no tag on disk. */
enum {
    TPDB_VNULL = 0,
    TPDB_VINT = 1,
    TPDB_VREAL = 2,
    TPDB_VTEXT = 3,
    TPDB_VBLOB = 4,
    TPDB_VBOOL = 5
};

/* One column value. For TEXT and BLOB, `base`/`len` point at bytes owned by
 * whoever produced the value (see each function); TEXT is not
 * NUL-terminated. For BOOL, `i` is 0 or 1. */
struct tpdb_value {
    int type;
    int64_t i;
    double r;
    const uint8_t *base;
    size_t len;
};

/* A column of a table, as the catalog stores it. Strings are
 * NUL-terminated; `default_sql` is NULL when the column has no DEFAULT. */
struct tpdb_column {
    const char *name;
    const char *type; /* declared type, upper-cased by TrashPandaDB */
    int not_null;
    const char *default_sql;
};

/* A table of the catalog. `auto_pk` is recomputed on load, as TrashPandaDB
 * does: the PK column's declared type contains "INT". `pk_idx` is -1 for no
 * primary key. */
struct tpdb_table {
    const char *name;
    uint32_t root;
    int64_t next_rowid;
    int pk_idx;
    int auto_pk;
    unsigned ncols;
    const struct tpdb_column *cols;
};

/* An index of the catalog. `cols` holds `ncols` column names. */
struct tpdb_index {
    const char *name;
    const char *table;
    unsigned ncols;
    const char *const *cols;
    uint32_t root;
    int unique;
};

/* Header and recovery facts, as read at open. */
struct tpdb_file_info {
    uint32_t version;        /* header version field (2 in genuine files) */
    uint32_t page_count;     /* header field as stored */
    uint32_t free_list_head; /* header field as stored */
    uint64_t file_size;      /* size of the page file in bytes */
    uint64_t wal_size;       /* size of the WAL in bytes (0 if missing) */
    uint32_t wal_committed;  /* commits (sentinels) replayed from the WAL */
    uint32_t eff_page_count; /* page count in effect (header, clamped, WAL) */
    uint32_t eff_free_head;  /* free-list head in effect */
};

struct tpdb_file;
struct tpdb_cursor;

/* Opens the page file `path` and its WAL `<path>-wal`, replaying the WAL's
 * committed frames (pages up to the last commit sentinel; trailing frames are
 * ignored) and loading the catalog.
 *
 * Read-only (TPDB_FILE_RDONLY): takes a shared flock on the page file;
 * neither file is written or created; a missing WAL, or one with a bad
 * magic, means no WAL. Read-write: takes an exclusive flock, creates the WAL
 * if missing, checkpoints committed WAL frames into the page file and resets
 * the WAL to its 32-byte header (also when its magic is bad); with
 * TPDB_FILE_CREATE a missing page file is created. flocks belong to the
 * handle, so two handles on one file conflict even in one process.
 * TrashPandaDB itself takes no locks: do not run it on the same file.
 *
 * On TPDB_OK *out is a handle the caller owns and releases with
 * tpdb_file_close(). Errors: TPDB_NOTFOUND (no such file), TPDB_BUSY (another
 * tpdb handle holds the file in a conflicting mode), TPDB_CORRUPT (bad magic,
 * version 1, damaged pages or catalog, a committed WAL frame for a page no
 * commit could have allocated; the message names file and page),
 * TPDB_IOERR, TPDB_NOMEM, TPDB_INVALID (NULL arguments). On error *out is
 * NULL and errmsg (TPDB_ERRMSG_SIZE bytes, may be NULL) says why. */
TPDB_API int tpdb_file_open(const char *path,
                            int flags,
                            struct tpdb_file **out,
                            char *errmsg);

/* Closes the handle. An open transaction is rolled back; open cursors must
 * be closed first (they are not freed here). NULL is a no-op. */
TPDB_API void tpdb_file_close(struct tpdb_file *f);

/* The message of the last failed call on this handle or its cursors. Owned
 * by the handle; valid until the next call on it. Never NULL. */
TPDB_API const char *tpdb_file_errmsg(const struct tpdb_file *f);

/* Fills *info with the header and recovery facts. Never fails. */
TPDB_API void tpdb_file_get_info(const struct tpdb_file *f,
                                 struct tpdb_file_info *info);

/* Walks a page chain: which = TPDB_CHAIN_FREELIST (the free list from the
 * head in effect) or TPDB_CHAIN_CATALOG (catalog continuation pages). On
 * TPDB_OK *pages is an array of *n page numbers in chain order, allocated
 * with tpdb_malloc, that the caller frees with tpdb_free (NULL when empty).
 * Errors: TPDB_CORRUPT (cycle, out-of-range page), TPDB_NOMEM, TPDB_IOERR. */
enum { TPDB_CHAIN_FREELIST = 1, TPDB_CHAIN_CATALOG = 2 };
TPDB_API int tpdb_file_chain(struct tpdb_file *f,
                             int which,
                             uint32_t **pages,
                             size_t *n);

/* The WAL's committed page numbers replayed at open, in first-seen order,
 * without duplicates. The array is owned by the handle and valid until the
 * next write or close. */
TPDB_API const uint32_t *tpdb_file_wal_pages(const struct tpdb_file *f,
                                             size_t *n);

/* Catalog access. Returned pointers (and every string and array inside) are
 * owned by the handle and stay valid until the next write call, rollback or
 * close. tpdb_file_table/tpdb_file_index return NULL for an index out of
 * range; the _find variants return NULL for an unknown name (exact,
 * case-sensitive match, as TrashPandaDB stores names). */
TPDB_API unsigned tpdb_file_table_count(const struct tpdb_file *f);
TPDB_API const struct tpdb_table *tpdb_file_table(const struct tpdb_file *f,
                                                  unsigned i);
TPDB_API const struct tpdb_table *tpdb_file_table_find(
    const struct tpdb_file *f,
    const char *name);
TPDB_API unsigned tpdb_file_index_count(const struct tpdb_file *f);
TPDB_API const struct tpdb_index *tpdb_file_index(const struct tpdb_file *f,
                                                  unsigned i);
TPDB_API const struct tpdb_index *tpdb_file_index_find(
    const struct tpdb_file *f,
    const char *name);

/* Evaluates a column DEFAULT (SQL text as stored) into *out, the value a row
 * shorter than the schema gets for that column. Literals are understood:
 * NULL, integers, reals, 'text' ('' escapes a quote), X'hex', TRUE/FALSE,
 * each optionally signed and parenthesised. Anything else (an expression
 * TrashPandaDB would evaluate, like CURRENT_TIMESTAMP) yields TEXT holding
 * the SQL itself. A NULL `sql` yields NULL. TEXT/BLOB bytes point into
 * `scratch` (at least strlen(sql) bytes, owned by the caller) or into `sql`.
 * Returns TPDB_OK. */
TPDB_API int tpdb_default_eval(const char *sql,
                               uint8_t *scratch,
                               struct tpdb_value *out);

/* ---- Cursors ------------------------------------------------------------
 * A cursor walks one B+ tree in key order (see the key-order note at the
 * top). It is owned by the caller and must be closed with
 * tpdb_cursor_close() before the file is closed. Any write call on the file
 * (insert/update/delete/create/commit/rollback) invalidates every cursor:
 * their later calls return TPDB_MISUSE, except close. Errors are TPDB_CORRUPT,
 * TPDB_IOERR, TPDB_NOMEM or TPDB_MISUSE; the message is in
 * tpdb_file_errmsg(). A cursor starts positioned at EOF. */

/* Opens a cursor on the table tree (TPDB_NOTFOUND for an unknown table). */
TPDB_API int tpdb_cursor_open_table(struct tpdb_file *f,
                                    const char *table,
                                    struct tpdb_cursor **out);

/* Opens a cursor on the index tree (TPDB_NOTFOUND for an unknown index). */
TPDB_API int tpdb_cursor_open_index(struct tpdb_file *f,
                                    const char *index,
                                    struct tpdb_cursor **out);

/* Closes the cursor; NULL is a no-op. */
TPDB_API void tpdb_cursor_close(struct tpdb_cursor *c);

/* Positions at the first (tpdb_cursor_first) or last entry; at EOF if the
 * tree is empty. */
TPDB_API int tpdb_cursor_first(struct tpdb_cursor *c);
TPDB_API int tpdb_cursor_last(struct tpdb_cursor *c);

/* Moves to the next / previous entry, or to EOF past the end. Also stops at
 * EOF when a TPDB_SEEK_EQ prefix bound (index cursors) no longer matches. */
TPDB_API int tpdb_cursor_next(struct tpdb_cursor *c);
TPDB_API int tpdb_cursor_prev(struct tpdb_cursor *c);

/* Nonzero when the cursor is at EOF. */
TPDB_API int tpdb_cursor_eof(const struct tpdb_cursor *c);

/* Seek operators. */
enum {
    TPDB_SEEK_EQ = 1, /* exactly this key (table) / this prefix (index) */
    TPDB_SEEK_GE = 2, /* first entry >= key in file order */
    TPDB_SEEK_LE = 3  /* last entry <= key in file order */
};

/* Table cursors: seeks by rowid. EQ leaves the cursor at EOF when the rowid
 * is absent; next() after EQ continues the scan normally. */
TPDB_API int tpdb_cursor_seek_rowid(struct tpdb_cursor *c,
                                    int op,
                                    int64_t rowid);

/* Index cursors: seeks by a key prefix made of the first `n` indexed columns'
 * values (INTEGER -> 8 bytes big-endian, TEXT -> bytes + 0x00; BOOL counts
 * as INTEGER 0/1). EQ positions on the first entry with that prefix and makes
 * next() stop at EOF after the last one; GE/LE compare the prefix with the
 * entry keys bytewise (an entry that starts with the prefix counts as equal,
 * so LE lands on the last entry with the prefix). Returns TPDB_INVALID
 * for a NULL, REAL or BLOB value or n greater than the index's columns. */
TPDB_API int tpdb_cursor_seek_index(struct tpdb_cursor *c,
                                    int op,
                                    const struct tpdb_value *vals,
                                    unsigned n);

/* Rowid of the current entry: the key for table cursors, the last 8 bytes of
 * the key for index cursors. TPDB_MISUSE at EOF. */
TPDB_API int tpdb_cursor_rowid(struct tpdb_cursor *c, int64_t *rowid);

/* The raw key bytes of the current entry, owned by the cursor and valid
 * until it moves or closes. TPDB_MISUSE at EOF. */
TPDB_API int tpdb_cursor_key(struct tpdb_cursor *c,
                             const uint8_t **key,
                             size_t *len);

/* Table cursors: decodes the current row. *vals gets the table's ncols
 * values (rows shorter than the schema are padded with each column's
 * DEFAULT, evaluated as tpdb_default_eval(), or NULL), *stored the column
 * count stored in the row. Values and their bytes are owned by the cursor
 * and valid until it moves or closes. Unknown tags decode as NULL and
 * consume nothing, as TrashPandaDB does; stored columns beyond the schema
 * are ignored. TPDB_MISUSE at EOF or on an index cursor; TPDB_CORRUPT when
 * the row or its overflow chain is damaged. */
TPDB_API int tpdb_cursor_row(struct tpdb_cursor *c,
                             const struct tpdb_value **vals,
                             unsigned *ncols,
                             unsigned *stored);

/* ---- Writes ---------------------------------------------------------------
 * Writes need a read-write handle (TPDB_READONLY otherwise). Each write call
 * is a statement: it succeeds completely or leaves no trace (the pages,
 * header and catalog it touched are restored). Outside tpdb_file_begin() each
 * statement commits on its own; inside, nothing reaches disk until
 * tpdb_file_commit(). A commit writes every dirty page as a WAL frame, then
 * a commit sentinel, fdatasyncs the WAL, and checkpoints (header, pages,
 * fsync, WAL truncated to its header). The sentinel's page image, zero in
 * TrashPandaDB, carries the new page count and free-list head (with a
 * CRC-32C) so that recovery after a crash before the checkpoint keeps the
 * free-list head right (defect B5); TrashPandaDB ignores it. Leaves and
 * interior pages split by bytes (defect B1). Leaves are never merged (as in
 * TrashPandaDB). A handle is not thread-safe: use one per thread, or a
 * lock. */

/* Starts a transaction. TPDB_MISUSE if one is open. */
TPDB_API int tpdb_file_begin(struct tpdb_file *f);

/* Commits the open transaction (TPDB_MISUSE if none). On an error before
 * the WAL's fdatasync succeeded nothing was committed and the handle is
 * back at the last commit; on an error in the checkpoint that follows, the
 * commit is durable, its pages stay readable from memory and the next
 * commit (or open) checkpoints them again. TPDB_IOERR, TPDB_FULL. */
TPDB_API int tpdb_file_commit(struct tpdb_file *f);

/* Drops the open transaction (TPDB_MISUSE if none) and restores the
 * catalog as it was at tpdb_file_begin(). */
TPDB_API int tpdb_file_rollback(struct tpdb_file *f);

/* Inserts a row of `n` values (n <= the table's ncols; missing trailing
 * columns are stored as DEFAULT or NULL). The rowid follows TrashPandaDB:
 * an INTEGER value in the PK column is the rowid; otherwise next_rowid is
 * used; next_rowid moves past every rowid used. *rowid (may be NULL) gets
 * it. Errors: TPDB_NOTFOUND (table), TPDB_INVALID (too many values, NOT NULL
 * violated, a REAL/BLOB value in an indexed column, a duplicate rowid, a
 * UNIQUE violation), TPDB_TOOBIG (an index key over 1000 bytes),
 * TPDB_CORRUPT, TPDB_IOERR, TPDB_NOMEM. Values are copied; the caller keeps
 * ownership of `vals`. A DEFAULT that is not a literal is stored as the TEXT
 * of its SQL (see tpdb_default_eval). BOOL values are indexed as INTEGER 0/1
 * (TrashPandaDB refuses to index them). Each autocommit statement costs a
 * WAL fdatasync and two fsyncs: wrap bulk loads in begin/commit. */
TPDB_API int tpdb_file_insert(struct tpdb_file *f,
                              const char *table,
                              const struct tpdb_value *vals,
                              unsigned n,
                              int64_t *rowid);

/* Replaces the row `rowid` with `n` values (as insert). The rowid does not
 * change, even if the PK value does (TrashPandaDB behaviour B7 is avoided by
 * rejecting a changed INTEGER PK with TPDB_INVALID). TPDB_NOTFOUND when the
 * table or row is missing; other errors as insert. */
TPDB_API int tpdb_file_update(struct tpdb_file *f,
                              const char *table,
                              int64_t rowid,
                              const struct tpdb_value *vals,
                              unsigned n);

/* Deletes the row `rowid` and its index entries, freeing its overflow
 * chain. TPDB_NOTFOUND when the table or row is missing. */
TPDB_API int tpdb_file_delete(struct tpdb_file *f,
                              const char *table,
                              int64_t rowid);

/* Raises the table's next_rowid (the rowid the next row without an INTEGER
 * PK value gets) to next_rowid; a value at or below the current one
 * changes nothing, so rowids in use are never handed out again. Used to
 * carry a counter such as SQLite's AUTOINCREMENT sequence. Errors:
 * TPDB_NOTFOUND (table), TPDB_READONLY, TPDB_IOERR, TPDB_NOMEM. */
TPDB_API int tpdb_file_raise_next_rowid(struct tpdb_file *f,
                                        const char *table,
                                        int64_t next_rowid);

/* Creates a table. `cols` (ncols >= 1) are copied; `pk_idx` is the PK
 * column or -1. Column types are upper-cased as TrashPandaDB stores them.
 * Errors: TPDB_INVALID (name exists, bad pk_idx, a name over 255 bytes,
 * a default over 65535 bytes), TPDB_NOMEM, TPDB_IOERR. */
TPDB_API int tpdb_file_create_table(struct tpdb_file *f,
                                    const char *name,
                                    const struct tpdb_column *cols,
                                    unsigned ncols,
                                    int pk_idx);

/* Creates an index on `ncols` columns of `table` and fills it from the
 * table's rows. Errors: TPDB_NOTFOUND (table or column), TPDB_INVALID (name
 * exists, a UNIQUE violation in existing rows, a REAL/BLOB value), others as
 * insert. */
TPDB_API int tpdb_file_create_index(struct tpdb_file *f,
                                    const char *name,
                                    const char *table,
                                    const char *const *cols,
                                    unsigned ncols,
                                    int unique);

/* ---- Replication ----------------------------------------------------------
 * A commit can be replicated before it is written, as the tpdb VFS does for
 * SQLite. The replicated form of a commit is a struct tpdb_txn in the
 * mapping of raftfsm/entry.h's TPDB_ENTRY_TPDBFILE: page_size 4096; txn page
 * 1 holds the 64-byte TPDB header (magic, version, page_count,
 * free_list_head; zeros after it), txn page N+1 is TPDB page N; db_pages =
 * page_count + 1; page 1 is always present. */

/* Whole-file commits of more mapped pages than this go to
 * hooks->commit_part (version 2) in parts of at most this many pages, and
 * commits of changes to hooks->commit_delta_part (version 3). */
#define TPDB_FILE_REPL_PART_PAGES 1024

struct tpdb_file_hooks {
    int version; /* 1, 2 (commit_part) or 3 (commit_delta_part) */
    void *arg;   /* passed to every hook */

    /* A write statement is starting (NULL: always allowed). Return TPDB_OK,
     * or an error (TPDB_NOTLEADER, TPDB_READONLY, ...) with errmsg naming
     * the leader: the statement then fails with that code, changing
     * nothing. */
    int (*write_check)(void *arg, char *errmsg);

    /* A commit is about to write its WAL frames. Blocks until txn is
     * durable on a quorum (TPDB_OK), definitely failed, or of unknown
     * outcome (TPDB_UNKNOWN). txn and its pages are valid only during the
     * call. On any code but TPDB_OK nothing reaches either file, the
     * statement or transaction is rolled back completely and the commit
     * fails with that code, errmsg in tpdb_file_errmsg(). */
    int (*commit)(void *arg, const struct tpdb_txn *txn, char *errmsg);

    /* The local write of a commit whose hook returned TPDB_OK finished:
     * `written` is 1 when it is durable (the WAL fdatasync succeeded). */
    void (*done)(void *arg, int written);

    /* Whether the first commit after installation must carry the whole
     * file (1) or only its changes (0, when every replica already holds
     * this file's current state). NULL: always the whole file. */
    int (*needs_full)(void *arg);

    /* Version 2 (NULL, or version 1: commit gets every commit whole). A
     * whole-file commit of more than TPDB_FILE_REPL_PART_PAGES mapped pages
     * goes here instead of commit, in parts of at most that many pages in
     * page order, one call each: part 0 starts with the header page, every
     * part's db_pages is the whole file's, `final` marks the last part.
     * Memory stays at one part whatever the file's size. The last part's
     * result is the commit's, as for commit; any part that returns an
     * error ends the commit with that code, nothing written. */
    int (*commit_part)(void *arg,
                       const struct tpdb_txn *part,
                       unsigned index,
                       int final,
                       char *errmsg);

    /* Version 3 (NULL, or an earlier version: commit gets such a commit
     * whole). A commit of changes (not the whole file) of more than
     * TPDB_FILE_REPL_PART_PAGES mapped pages goes here instead of commit,
     * in parts of at most that many pages, one call each: part 0 starts
     * with the header page, then the changed pages in increasing order
     * across all parts; every part's db_pages is the commit's, `final`
     * marks the last part. The pages point into the handle's changed
     * pages (no copy). Results as for commit_part. A replica applies such
     * a sequence with tpdb_file_stage_*. */
    int (*commit_delta_part)(void *arg,
                             const struct tpdb_txn *part,
                             unsigned index,
                             int final,
                             char *errmsg);
};

/* Installs hooks on a read-write handle (copied; NULL removes them). The
 * first commit after installation carries the whole file (txn pages 1 ..
 * page_count + 1; in parts through commit_part when large), so that a
 * replica can start from it; later commits carry
 * the header page and the pages they changed. After a commit was
 * replicated but not written locally, every later write on the handle fails
 * with TPDB_IOERR (the local copy is behind the cluster). Errors:
 * TPDB_READONLY (read-only handle), TPDB_MISUSE (a transaction is open),
 * TPDB_INVALID (unknown hooks version). */
TPDB_API int tpdb_file_set_hooks(struct tpdb_file *f,
                                 const struct tpdb_file_hooks *hooks);

/* Applies a replicated commit (the mapping above) to the page file at
 * `path`, creating it if missing, through the library's crash-safe
 * protocol: committed frames already in its WAL are checkpointed first, then
 * the pages are written as WAL frames with a commit sentinel, the WAL is
 * fdatasynced and checkpointed into the page file, which is cut to the
 * header plus page_count pages. A reader opening the file afterwards sees
 * exactly the committed state. Takes the exclusive flock without waiting.
 * Errors: TPDB_BUSY (a handle holds the file: retry later), TPDB_INVALID
 * (txn not in the mapping: bad page size, no header page, bad magic,
 * page numbers), TPDB_CORRUPT (the existing file), TPDB_IOERR, TPDB_FULL,
 * TPDB_NOMEM; errmsg (may be NULL) says why. */
TPDB_API int tpdb_file_apply(const char *path,
                             const struct tpdb_txn *txn,
                             char *errmsg);

/* ---- Replicated commits in parts (a replica's side of commit_delta_part)
 * A commit that arrives in parts is staged in a file of its own, never in
 * memory, and applied at its last part as one commit of the format's WAL
 * protocol: readers of the page file see the state before it or after it,
 * never a part, and so does crash recovery. Memory stays at one part's
 * pointers and a 256 KiB buffer whatever the commit's size. */
struct tpdb_file_stage;

/* Creates (or truncates) the stage file at stage_path, which belongs to
 * the stage from now on. On TPDB_OK *out is owned by the caller until
 * tpdb_file_stage_close. Errors: TPDB_IOERR, TPDB_NOMEM. */
TPDB_API int tpdb_file_stage_open(const char *stage_path,
                                  struct tpdb_file_stage **out,
                                  char *errmsg);

/* Adds a part (the mapping above) to the stage: the first part starts with
 * the header page; page numbers increase across all parts; every part has
 * the first part's db_pages. The part's memory is the caller's again on
 * return. Errors: TPDB_INVALID (a part out of this shape), TPDB_IOERR,
 * TPDB_FULL; the stage is unusable after an error. */
TPDB_API int tpdb_file_stage_add(struct tpdb_file_stage *st,
                                 const struct tpdb_txn *part,
                                 char *errmsg);

/* Applies every staged part to the page file at `path` (created if
 * missing) as one commit, as tpdb_file_apply does for a whole commit:
 * exclusive flock without waiting, WAL frames copied from the stage file,
 * the commit sentinel, fdatasync, then a checkpoint that reads the frames
 * back from the WAL, and the page file cut to its new size. Errors:
 * TPDB_BUSY (a handle holds the file: retry, the stage is kept),
 * TPDB_INVALID (no part staged), TPDB_CORRUPT (the existing file),
 * TPDB_IOERR, TPDB_FULL, TPDB_NOMEM. After any error but TPDB_BUSY the
 * page file is at the old state or, when the WAL sync had succeeded, at
 * the new one (its next open finishes the checkpoint); applying again is
 * allowed and writes the same state. */
TPDB_API int tpdb_file_stage_apply(struct tpdb_file_stage *st,
                                   const char *path,
                                   char *errmsg);

/* Removes the stage file and frees st; NULL is a no-op. */
TPDB_API void tpdb_file_stage_close(struct tpdb_file_stage *st);

/* Reads the committed state of the page file at `path` (header, pages and
 * the WAL's committed frames) in the mapping above: on TPDB_OK *image holds
 * *n_pages (= page_count + 1) pages of 4096 bytes, allocated with
 * tpdb_malloc, owned by the caller (tpdb_free). Takes no flock, so that it
 * works while a writer holds the file: the caller must make sure that no
 * commit runs meanwhile (the replicated state machine reads between
 * applies, with no own commit in flight). Errors: TPDB_NOTFOUND,
 * TPDB_CORRUPT, TPDB_IOERR, TPDB_NOMEM. */
TPDB_API int tpdb_file_image(const char *path,
                             uint8_t **image,
                             uint32_t *n_pages,
                             char *errmsg);

/* The size of the handle's committed state in the mapping above:
 * page_count + 1 pages. Never fails. */
TPDB_API uint32_t tpdb_file_mapped_pages(const struct tpdb_file *f);

/* Reads n pages of the handle's committed state (WAL included) in the
 * mapping above, from mapped page `first` (1 = the header page) into buf
 * (n * 4096 bytes, the caller's). A read-only handle holds a shared flock,
 * so no commit can change the file while it is open: reads across calls
 * are of one state. Errors (message in tpdb_file_errmsg): TPDB_INVALID
 * (a page outside 1 .. tpdb_file_mapped_pages), TPDB_IOERR. */
TPDB_API int tpdb_file_read_mapped(struct tpdb_file *f,
                                   uint32_t first,
                                   uint32_t n,
                                   uint8_t *buf);

/* Test hook (crash simulation): when `frames` >= 0, every later commit calls
 * _exit(77) in place of writing its WAL frame number `frames` (0-based;
 * the commit sentinel counts as the last frame), or, when it wrote all its
 * frames and fdatasynced the WAL, in place of the checkpoint. A negative
 * value disables it. Process-wide; not thread-safe; for tests only. */
TPDB_API void tpdb_file_test_crash_after_frames(long frames);

#endif /* TPDB_TPDBFILE_H */
