/*
 * The VFS hooks that connect the tpdb VFS (vfs/) to the Raft node
 * (raftfsm/): opening a database starts or joins the node of its directory
 * according to the URI parameters, writes are checked against leadership,
 * and commits are replicated before SQLite publishes them.
 *
 * URI parameters (all optional): node=ID, bind=HOST:PORT,
 * peers=ID@HOST:PORT,..., join=1 or join=HOST:PORT, election_ms, heartbeat_ms,
 * snapshot_threshold, snapshot_trailing, log_mb, ready_ms, commit_ms,
 * min_free_mb,
 * key_file=PATH (the cluster key; else $TPDB_REPLICATION_KEY),
 * key_file_next=PATH (a rotation's other key), insecure=1 (listen on a
 * non-loopback address without a key), listen=HOST:PORT (listen there,
 * advertise bind), log_level=error|warn|info|debug|none (stderr logging of
 * the whole process, as TPDB_LOG_LEVEL).
 */
#include "ext/hooks.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "raftfsm/entry.h"
#include "raftfsm/local.h"
#include "raftfsm/node.h"
#include "raftfsm/nodeconf.h"
#include "vfs/filepeek.h"
#include "vfs/vfs.h"

/* One per connection's main database file. */
struct extHandle {
    struct tpdb_node *node; /* NULL when another process runs the node */
    /* Then writes go to that process's node through its socket (local.h);
     * NULL while none serves it. */
    struct tpdb_local_client *remote;
    char metaDir[PATH_MAX + 8];
    char name[256]; /* database file name in the data directory */
    char readonlyMsg[TPDB_ERRMSG_SIZE];
    char path[PATH_MAX]; /* the database file */
    /* Rollback-journal file with data: imported after the switch to WAL
     * (extAdoptLater); until then writes are refused with adoptMsg. */
    int adoptLater;
    char adoptMsg[TPDB_ERRMSG_SIZE];
    int session;    /* remote: a write check passed, its end not yet told */
    int acked;      /* the node acknowledged a commit not yet written */
    unsigned parts; /* parts of a large transaction handed over so far */
};

/* Whether the file at path is an SQLite database in rollback-journal mode
 * holding data (its header's read and write versions are 1). */
static int inRollbackMode(const char *path)
{
    uint8_t head[100];
    return tpdbPeekHead(path, head, sizeof head) == sizeof head &&
           memcmp(head, "SQLite format 3", 16) == 0 && head[18] == 1 &&
           head[19] == 1 && tpdbGetBe32(head + 28) > 0;
}

/* Connects h to the node another process runs for its directory. */
static int remoteConnect(struct extHandle *h, char *errmsg)
{
    char why[TPDB_ERRMSG_SIZE] = "";
    tpdbLocalClose(h->remote);
    h->remote = NULL;
    int rc = tpdbLocalConnect(h->metaDir, &h->remote, why);
    if (rc != TPDB_OK && !tpdbNodeLockHeld(h->metaDir)) {
        h->remote = NULL;
        tpdbErrf(errmsg,
                 "the process running this directory's node went away and "
                 "no process runs it now: close and reopen the database to "
                 "run the node in this process");
        return TPDB_READONLY;
    }
    if (rc != TPDB_OK) {
        h->remote = NULL;
        tpdbErrf(errmsg, "%s (its node takes no writes from here: %s)",
                 h->readonlyMsg, why);
        return TPDB_READONLY;
    }
    return TPDB_OK;
}

/* The link to the other process's node, reconnected if it was lost (that
 * process may have been replaced); NULL with errmsg if there is none. */
static struct tpdb_local_client *remoteOf(struct extHandle *h, char *errmsg)
{
    if ((h->remote == NULL || tpdbLocalBroken(h->remote)) &&
        remoteConnect(h, errmsg) != TPDB_OK) {
        return NULL;
    }
    return h->remote;
}

static unsigned uriUnsigned(const char *uri, const char *key)
{
    sqlite3_int64 v = sqlite3_uri_int64(uri, key, 0);
    return v > 0 && v < 0x7fffffff ? (unsigned)v : 0;
}

static void splitPath(const char *path,
                      char *dir,
                      size_t dirSize,
                      const char **name)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        snprintf(dir, dirSize, ".");
        *name = path;
    } else {
        snprintf(dir, dirSize, "%.*s", slash == path ? 1 : (int)(slash - path),
                 path);
        *name = slash + 1;
    }
}

/* Applies the log_level parameter, if given. */
static int uriLogLevel(const char *uri, char *errmsg)
{
    const char *name = sqlite3_uri_parameter(uri, "log_level");
    if (name == NULL) {
        return TPDB_OK;
    }
    int level = tpdbLogParseLevel(name);
    if (level < 0) {
        tpdbErrf(errmsg,
                 "log_level '%s': want error, warn, info, debug or none", name);
        return TPDB_INVALID;
    }
    tpdbLogSetLevel(level);
    return TPDB_OK;
}

static int hookDbOpen(void *arg,
                      const char *path,
                      const char *uri,
                      void **handle,
                      char *errmsg)
{
    struct tpdb_node_config cfg;
    struct extHandle *h;
    char dir[PATH_MAX];
    const char *name;
    int rc;
    (void)arg;

    splitPath(path, dir, sizeof dir, &name);
    rc = uriLogLevel(uri, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    if (!tpdbDbNameValid(name)) {
        tpdbErrf(errmsg,
                 "tpdb: database file name '%s' is not allowed "
                 "(1-255 bytes, not starting with '.')",
                 name);
        return TPDB_INVALID;
    }
    memset(&cfg, 0, sizeof cfg);
    cfg.data_dir = dir;
    cfg.id = (uint64_t)sqlite3_uri_int64(uri, "node", 0);
    cfg.bind = sqlite3_uri_parameter(uri, "bind");
    cfg.peers = sqlite3_uri_parameter(uri, "peers");
    /* join is a boolean (wait to be added) or a member's HOST:PORT (ask it
     * to add this node). */
    cfg.join_address = sqlite3_uri_parameter(uri, "join");
    if (cfg.join_address != NULL && strchr(cfg.join_address, ':') != NULL) {
        cfg.join = 1;
    } else {
        cfg.join_address = NULL;
        cfg.join = sqlite3_uri_boolean(uri, "join", 0);
    }
    cfg.election_ms = uriUnsigned(uri, "election_ms");
    cfg.heartbeat_ms = uriUnsigned(uri, "heartbeat_ms");
    cfg.snapshot_threshold = uriUnsigned(uri, "snapshot_threshold");
    cfg.snapshot_trailing = uriUnsigned(uri, "snapshot_trailing");
    cfg.log_mb = uriUnsigned(uri, "log_mb");
    cfg.ready_ms = uriUnsigned(uri, "ready_ms");
    cfg.commit_ms = uriUnsigned(uri, "commit_ms");
    cfg.min_free_mb = uriUnsigned(uri, "min_free_mb");
    cfg.key_file = sqlite3_uri_parameter(uri, "key_file");
    cfg.key_file_next = sqlite3_uri_parameter(uri, "key_file_next");
    cfg.insecure = sqlite3_uri_boolean(uri, "insecure", 0);
    cfg.listen = sqlite3_uri_parameter(uri, "listen");

    h = tpdb_calloc(1, sizeof *h);
    if (h == NULL) {
        tpdbErrf(errmsg, "tpdb: out of memory");
        return TPDB_NOMEM;
    }
    snprintf(h->name, sizeof h->name, "%s", name);
    snprintf(h->path, sizeof h->path, "%s", path);
    h->adoptLater = inRollbackMode(path);
    snprintf(h->adoptMsg, sizeof h->adoptMsg,
             "%s is in rollback-journal mode and was not switched to WAL, "
             "so the cluster does not hold it",
             name);
    if (access(dir, W_OK) != 0 && (errno == EROFS || errno == EACCES)) {
        int err = errno;
        if (access(path, F_OK) != 0) {
            /* Nothing to read, and nothing can be created there. */
            tpdbErrf(errmsg,
                     "the data directory must be writable: %s: %s (a new "
                     "database cannot be created and no node can run there)",
                     dir, strerror(err));
            tpdb_free(h);
            return TPDB_READONLY;
        }
        /* No node can run on read-only media: read the files as they are
         * (SQLite itself refuses what needs to write). */
        tpdbErrf(errmsg,
                 "the directory %s is read-only: no node can run there, so "
                 "this connection only reads",
                 dir);
        rc = TPDB_READONLY;
    } else {
        rc = tpdbNodeAcquire(&cfg, &h->node, errmsg);
    }
    if (rc == TPDB_READONLY) {
        /* Another process is the node: read its applied state, write
         * through it. */
        char real[PATH_MAX];
        h->node = NULL;
        snprintf(h->readonlyMsg, sizeof h->readonlyMsg, "%s", errmsg);
        snprintf(h->metaDir, sizeof h->metaDir, "%s/.tpdb",
                 realpath(dir, real) != NULL ? real : dir);
        if (remoteConnect(h, errmsg) != TPDB_OK) {
            tpdbLog(TPDB_LOG_INFO, "%s: %s", path, errmsg);
            rc = TPDB_OK;
        } else {
            /* As a local open would: the node's process adopts it. */
            rc = h->adoptLater ? TPDB_OK
                               : tpdbLocalAdopt(h->remote, name, errmsg);
        }
        if (rc != TPDB_OK) {
            tpdbLocalClose(h->remote);
        }
    }
    if (rc == TPDB_OK && h->node != NULL && !h->adoptLater) {
        rc = tpdbNodeAdopt(h->node, name, path, errmsg);
        if (rc != TPDB_OK) {
            tpdbNodeRelease(h->node);
        }
        if (rc == TPDB_CORRUPT) {
            /* Not a SQLite database: SQLite says so on the first read, as
             * on "unix"; nothing of it can be replicated, so writes are
             * refused with the reason. */
            h->node = NULL;
            snprintf(h->readonlyMsg, sizeof h->readonlyMsg, "%s", errmsg);
            rc = TPDB_OK;
        }
    }
    if (rc != TPDB_OK) {
        /* The VFS says which file (open PATH: ...). */
        tpdb_free(h);
        return rc;
    }
    *handle = h;
    return TPDB_OK;
}

static void hookDbClose(void *arg, void *handle)
{
    struct extHandle *h = handle;
    (void)arg;
    if (h->node != NULL) {
        tpdbNodeRelease(h->node);
    }
    tpdbLocalClose(h->remote);
    tpdb_free(h);
}

/* Imports h's database if its open left that for later and the file is in
 * WAL mode now (switched by this connection's open, or later, e.g. by
 * PRAGMA journal_mode on an ATTACHed database, which no open switches). No
 * SQLite lock is needed: adoption reads the file and its WAL itself. */
static int adoptPending(struct extHandle *h, char *errmsg)
{
    int rc = TPDB_OK;
    if (!h->adoptLater || inRollbackMode(h->path)) {
        return TPDB_OK; /* nothing left for later, or still not WAL */
    }
    if (h->node != NULL) {
        rc = tpdbNodeAdopt(h->node, h->name, h->path, errmsg);
    } else {
        struct tpdb_local_client *r = remoteOf(h, errmsg);
        rc = r != NULL ? tpdbLocalAdopt(r, h->name, errmsg) : TPDB_READONLY;
    }
    if (rc == TPDB_OK) {
        h->adoptLater = 0;
    } else {
        snprintf(h->adoptMsg, sizeof h->adoptMsg, "%s", errmsg);
    }
    return rc;
}

static int hookWriteCheck(void *arg, void *handle, char *errmsg)
{
    struct extHandle *h = handle;
    (void)arg;
    if (h->adoptLater) {
        (void)adoptPending(h, errmsg); /* on failure adoptMsg says why */
        if (h->adoptLater) {
            tpdbErrf(errmsg, "%s", h->adoptMsg);
            return TPDB_INVALID;
        }
    }
    if (h->node == NULL) {
        struct tpdb_local_client *r = remoteOf(h, errmsg);
        if (r == NULL) {
            return TPDB_READONLY;
        }
        int rc = tpdbLocalWriteCheck(r, h->name, errmsg);
        h->session = rc == TPDB_OK;
        return rc;
    }
    return tpdbNodeWriteCheck(h->node, h->name, errmsg);
}

static void hookBeforeWriteLock(void *arg, void *handle)
{
    struct extHandle *h = handle;
    (void)arg;
    if (h->node != NULL) {
        tpdbNodeWaitWritable(h->node, h->name);
    } else if (h->remote != NULL && !tpdbLocalBroken(h->remote)) {
        tpdbLocalWaitWritable(h->remote, h->name);
    }
}

static int hookCommit(void *arg,
                      void *handle,
                      const struct tpdb_txn *txn,
                      char *errmsg)
{
    struct extHandle *h = handle;
    int rc;
    (void)arg;
    if (h->node == NULL && !h->session) {
        tpdbErrf(errmsg, "%s", h->readonlyMsg);
        return TPDB_READONLY;
    }
    rc = h->node != NULL
             ? tpdbNodeCommit(h->node, h->name, txn, errmsg)
             : tpdbLocalCommit(h->remote, h->name, txn, 1, 0, 1, errmsg);
    if (rc == TPDB_OK) {
        h->acked = 1;
    }
    return rc;
}

/* A part of a large transaction (VFS hook version 3). */
static int hookCommitPart(void *arg,
                          void *handle,
                          const struct tpdb_txn *part,
                          int final,
                          char *errmsg)
{
    struct extHandle *h = handle;
    (void)arg;
    if (h->node == NULL && !h->session) {
        tpdbErrf(errmsg, "%s", h->readonlyMsg);
        return TPDB_READONLY;
    }
    unsigned index = h->parts++;
    int rc = h->node != NULL ? tpdbNodeCommitPart(h->node, h->name, part, index,
                                                  final, errmsg)
                             : tpdbLocalCommit(h->remote, h->name, part, 0,
                                               index, final, errmsg);
    if (final || rc != TPDB_OK) {
        h->parts = 0;
    }
    if (final && rc == TPDB_OK) {
        h->acked = 1;
    }
    return rc;
}

static void hookTxnEnd(void *arg, void *handle, int committed)
{
    struct extHandle *h = handle;
    (void)arg;
    h->parts = 0;
    if (h->node == NULL) {
        if (h->session && h->remote != NULL) {
            tpdbLocalWriteDone(h->remote, h->name, h->acked && committed);
        }
        h->session = 0;
        h->acked = 0;
        return;
    }
    if (h->acked) {
        h->acked = 0;
        tpdbNodeOwnWriteDone(h->node, h->name, committed);
    }
}

int extHooksRegister(void)
{
    static const struct tpdb_vfs_hooks hooks = {
        .version = 3,
        .arg = NULL,
        .db_open = hookDbOpen,
        .db_close = hookDbClose,
        .write_check = hookWriteCheck,
        .commit = hookCommit,
        .txn_end = hookTxnEnd,
        .before_write_lock = hookBeforeWriteLock,
        .commit_part = hookCommitPart,
    };
    return tpdbVfsRegister("tpdb", &hooks, 0);
}

int extAdoptLater(sqlite3 *conn, char *errmsg)
{
    struct extHandle *h = tpdbVfsHandleOf(conn);
    return h != NULL ? adoptPending(h, errmsg) : TPDB_OK;
}
