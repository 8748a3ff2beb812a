/*
 * The tpdb VFS: a shim over SQLite's "unix" VFS that captures the WAL frames
 * of every committed write transaction on the leader and appends replicated
 * frames on followers while keeping the WAL-index in step.
 *
 * It knows nothing of Raft. Whoever registers it supplies hooks: the VFS asks
 * them whether a database may be written, hands them each committed
 * transaction (blocking until they say it is durable elsewhere) and tells
 * them when the transaction's write lock is released.
 *
 * Frame path on the leader: SQLite xWrite of the commit-marked frame header
 * -> held back -> on the frame's page data write the transaction (pages of
 * the highest frames written since the WAL write lock was taken, up to the
 * commit frame, pages past the new size dropped) goes to hooks->commit ->
 * on success the header and data are written and SQLite publishes the
 * transaction; on failure nothing of the commit frame reaches the file and
 * COMMIT fails with an IOERR-class code, so SQLite rolls back.
 */
#ifndef TPDB_VFS_H
#define TPDB_VFS_H

#include <sqlite3.h>

#include "base/base.h"
#include "vfs/txn.h"

/* Extended result codes the VFS returns from a failed COMMIT. They are in
 * the SQLITE_IOERR class so that SQLite rolls the transaction back and the
 * connection stays usable; sqlite3_extended_errcode() tells them apart. */
#define TPDB_SQLITE_NOTLEADER (SQLITE_IOERR | (200 << 8))
#define TPDB_SQLITE_UNKNOWN (SQLITE_IOERR | (201 << 8))
#define TPDB_SQLITE_REPLFAIL (SQLITE_IOERR | (202 << 8))

/* The write of a replicated database outside WAL mode, which capture would
 * never see, refused before it reaches a file: a rollback-journal
 * transaction (an ATTACHed database or a connection through a VFS layered
 * over tpdb that nobody switched to WAL, journal_mode changed for every
 * database by a PRAGMA with no schema on a main database that is not
 * tpdb's) or a WAL write without the shared-memory write lock
 * (locking_mode=EXCLUSIVE set the same way). SQLITE_READONLY class: the
 * statement fails, the connection stays usable, nothing was written;
 * tpdb_last_error() says what to do (PRAGMA journal_mode=WAL). */
#define TPDB_SQLITE_NOTWAL (SQLITE_READONLY | (200 << 8))

/* URI parameter that marks a connection opened by tpdb itself (the node's
 * applier); db_open/db_close hooks are not called for it. */
#define TPDB_URI_INTERNAL "tpdb_internal"

/* Transactions of more pages than this go to hooks->commit_part (version
 * 3) in parts of at most this many pages, in bounded memory. */
#define TPDB_VFS_PART_PAGES 1024

struct tpdb_vfs_hooks {
    int version; /* 1, 2 or 3 */
    void *arg;   /* passed to every hook */

    /* A main database file is being opened by a connection that is not
     * internal. `path` is the full path SQLite gave xOpen; `uri` is the
     * sqlite3_filename, usable with sqlite3_uri_parameter(). On TPDB_OK
     * *handle is stored with the file and passed to the other hooks; on
     * error xOpen fails with SQLITE_CANTOPEN and errmsg is logged. Called
     * once per connection. */
    int (*db_open)(void *arg,
                   const char *path,
                   const char *uri,
                   void **handle,
                   char *errmsg);

    /* The connection's main file is closed. */
    void (*db_close)(void *arg, void *handle);

    /* A write transaction is about to write its first WAL frame. Return
     * TPDB_OK to let it go on, or TPDB_NOTLEADER / TPDB_READONLY with
     * errmsg naming the leader; the write then fails with
     * TPDB_SQLITE_NOTLEADER. Called on the writing thread. */
    int (*write_check)(void *arg, void *handle, char *errmsg);

    /* A write transaction commits. Blocks until txn is durable on a quorum
     * (TPDB_OK), definitely failed (TPDB_NOTLEADER, ...), or of unknown
     * outcome (TPDB_UNKNOWN). txn and its pages are valid only during the
     * call. Called on the writing thread with the WAL write lock held. */
    int (*commit)(void *arg,
                  void *handle,
                  const struct tpdb_txn *txn,
                  char *errmsg);

    /* The WAL write lock taken for a transaction on this handle was
     * released. `committed` is 1 when a commit went through hooks->commit
     * and its frame was written, 0 otherwise. Called for every release of
     * the lock by a non-internal connection, including sessions that wrote
     * nothing (a rolled back transaction, a checkpoint, WAL recovery). */
    void (*txn_end)(void *arg, void *handle, int committed);

    /* Version 2. The connection is about to take the WAL write lock (shm
     * slot 0) and holds no lock yet: the hook may wait, briefly and
     * bounded, until entries the transaction must be computed over are
     * written (they need that lock). Called on the connection's thread. */
    void (*before_write_lock)(void *arg, void *handle);

    /* Version 3. Called instead of commit for a transaction of more than
     * TPDB_VFS_PART_PAGES pages: once per part of at most that many pages,
     * in page order, `final` set on the last; part->db_pages is the size
     * after the commit. Returns as commit does; an error on any part fails
     * the transaction (SQLite rolls back), and only the final part's
     * outcome can be TPDB_UNKNOWN. Same thread and lock as commit. */
    int (*commit_part)(void *arg,
                       void *handle,
                       const struct tpdb_txn *part,
                       int final,
                       char *errmsg);
};

/* Registers the VFS under `name` (normally "tpdb") over the "unix" VFS.
 * `hooks` is copied; NULL means no replication (every write is allowed and
 * commits locally, and no PRAGMA is refused, for tests). Registering the
 * same name again replaces the hooks for files opened afterwards. Internal
 * connections (TPDB_URI_INTERNAL) are never captured. Returns an SQLITE_*
 * code. Thread-safe. */
int tpdbVfsRegister(const char *name,
                    const struct tpdb_vfs_hooks *hooks,
                    int make_default);

/* The message of the last failure the VFS reported on this thread (the
 * reason behind a TPDB_SQLITE_* code); "" if none. Static thread-local
 * storage, valid until the next failing call on this thread. */
const char *tpdbVfsLastError(void);

/* The handle hooks->db_open returned for the main database file of conn,
 * or NULL when that file is not a replicated tpdb file. */
void *tpdbVfsHandleOf(sqlite3 *conn);

/* Makes every later sync of the WAL of conn (a connection through the tpdb
 * VFS, in WAL mode: its WAL is opened first if need be) ask skip(arg)
 * first, on the syncing thread: non-zero skips that sync (SQLITE_OK
 * without an fsync). For a connection whose WAL syncs are not needed for
 * durability, the node's checkpointer connection (docs/design.md,
 * "Durability of the local copy"); no other file or connection is
 * affected, and a WAL reopened by SQLite syncs again. skip and arg are
 * borrowed: valid while conn is open. skip NULL: every sync is done.
 * Errors: TPDB_INVALID (no tpdb WAL). */
int tpdbVfsWalSyncFilter(sqlite3 *conn,
                         int (*skip)(void *arg),
                         void *arg,
                         char *errmsg);

/* Applies a replicated transaction to the database open on `conn`, which
 * must be a connection opened through the tpdb VFS, in WAL mode, with no
 * transaction open on it. Appends the frames to the WAL with valid
 * checksums, restarting the WAL first when it is fully checkpointed and no
 * reader uses it, updates the WAL-index (hash tables and both header copies)
 * so that every reader in any process sees the transaction on its next read,
 * and fsyncs the WAL when `sync` is non-zero. If the main file is empty,
 * page 1 of txn is first written to it so that SQLite sees a WAL database.
 * Waits (polling, up to timeout_ms) while another connection holds the
 * write lock. Cost grows with txn->n_pages, not with the WAL.
 * Returns a TPDB_* code with errmsg set. */
int tpdbVfsApply(sqlite3 *conn,
                 const struct tpdb_txn *txn,
                 int sync,
                 unsigned timeout_ms,
                 char *errmsg);

/* A transaction applied in pieces (see apply.c): owned by the caller from
 * tpdbVfsStageBegin until tpdbVfsStageCommit or tpdbVfsStageAbort, used by
 * one thread at a time. The connection must stay open and idle meanwhile. */
struct tpdb_vfs_stage;

/* Takes the WAL write lock of the database open on `conn` (a tpdb-VFS
 * connection in WAL mode whose main file is not empty; waits up to
 * timeout_ms while another connection holds the lock) and prepares to
 * append frames of `page_size`, which must match the database's. Nothing
 * staged is visible to any reader before the commit. Errors: TPDB_BUSY,
 * TPDB_INVALID (page size, empty main file, not WAL), TPDB_IOERR,
 * TPDB_NOMEM. */
int tpdbVfsStageBegin(sqlite3 *conn,
                      uint32_t page_size,
                      unsigned timeout_ms,
                      struct tpdb_vfs_stage **out,
                      char *errmsg);

/* Appends n page images (any page numbers >= 1, in any order, repeats
 * allowed: the last image of a page wins) as uncommitted frames. pages are
 * copied. Errors: TPDB_IOERR, TPDB_FULL, TPDB_NOMEM, TPDB_TOOBIG; the stage
 * must then be aborted. */
int tpdbVfsStageAppend(struct tpdb_vfs_stage *st,
                       const struct tpdb_page *pages,
                       uint32_t n,
                       char *errmsg);

/* Number of frames staged so far. */
uint32_t tpdbVfsStageFrames(const struct tpdb_vfs_stage *st);

/* Commits everything staged as one transaction leaving the database
 * db_pages long: appends the commit frame, syncs the WAL when `sync` is
 * non-zero, indexes and publishes, releases the lock. Frees st whatever the
 * outcome; on an error nothing was published. Errors: TPDB_INVALID (nothing
 * staged), TPDB_IOERR, TPDB_FULL, TPDB_CORRUPT. */
int tpdbVfsStageCommit(struct tpdb_vfs_stage *st,
                       uint32_t db_pages,
                       int sync,
                       char *errmsg);

/* Drops what was staged (never visible) and releases the lock; frees st.
 * NULL is a no-op. */
void tpdbVfsStageAbort(struct tpdb_vfs_stage *st);

/* A consistent read of every page of a database while writers go on (see
 * reader.c). Owned by the caller until tpdbVfsReaderClose; one thread at a
 * time. */
struct tpdb_vfs_reader;

/* Pins the last committed state of the database open on `conn`, a
 * tpdb-VFS connection in WAL mode that runs no statement until the reader
 * is closed. Takes the WAL write lock for a moment (waiting up to
 * timeout_ms) and, while it is held and the state is fixed, calls
 * pinned(arg, errmsg) if not NULL: a non-zero TPDB_* code from it fails the
 * open with that code. Errors: TPDB_BUSY (lock or every read slot busy),
 * TPDB_CORRUPT, TPDB_IOERR, TPDB_NOMEM. */
int tpdbVfsReaderOpen(sqlite3 *conn,
                      unsigned timeout_ms,
                      int (*pinned)(void *arg, char *errmsg),
                      void *arg,
                      struct tpdb_vfs_reader **out,
                      char *errmsg);

/* Page size and size in pages (0 for an empty database) of the pinned
 * state. */
uint32_t tpdbVfsReaderPageSize(const struct tpdb_vfs_reader *r);
uint32_t tpdbVfsReaderPages(const struct tpdb_vfs_reader *r);

/* Reads pages first .. first + n - 1 (within 1..pages) of the pinned state
 * into buf (n * page size bytes). Errors: TPDB_INVALID, TPDB_IOERR. */
int tpdbVfsReaderRead(struct tpdb_vfs_reader *r,
                      uint32_t first,
                      uint32_t n,
                      uint8_t *buf,
                      char *errmsg);

/* Releases the read lock and frees r; NULL is a no-op. */
void tpdbVfsReaderClose(struct tpdb_vfs_reader *r);

#endif /* TPDB_VFS_H */
