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
 * advertise bind).
 */
#include "ext/hooks.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "raftfsm/node.h"
#include "vfs/vfs.h"

/* One per connection's main database file. */
struct extHandle {
    struct tpdb_node *node; /* NULL when another process runs the node */
    char name[256];         /* database file name in the data directory */
    char readonlyMsg[TPDB_ERRMSG_SIZE];
    int acked;      /* the node acknowledged a commit not yet written */
    unsigned parts; /* parts of a large transaction handed over so far */
};

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
    if (name[0] == '\0' || name[0] == '.' || strlen(name) > 255) {
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
    if (access(dir, W_OK) != 0 && (errno == EROFS || errno == EACCES)) {
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
        /* Another process is the node: read its applied state. */
        h->node = NULL;
        snprintf(h->readonlyMsg, sizeof h->readonlyMsg, "%s", errmsg);
        rc = TPDB_OK;
    }
    if (rc == TPDB_OK && h->node != NULL) {
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
        tpdb_free(h);
        tpdbErrWrap(errmsg, "tpdb: open %s", path);
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
    tpdb_free(h);
}

static int hookWriteCheck(void *arg, void *handle, char *errmsg)
{
    struct extHandle *h = handle;
    (void)arg;
    if (h->node == NULL) {
        tpdbErrf(errmsg, "%s", h->readonlyMsg);
        return TPDB_READONLY;
    }
    return tpdbNodeWriteCheck(h->node, h->name, errmsg);
}

static void hookBeforeWriteLock(void *arg, void *handle)
{
    struct extHandle *h = handle;
    (void)arg;
    if (h->node != NULL) {
        tpdbNodeWaitWritable(h->node, h->name);
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
    if (h->node == NULL) {
        tpdbErrf(errmsg, "%s", h->readonlyMsg);
        return TPDB_READONLY;
    }
    rc = tpdbNodeCommit(h->node, h->name, txn, errmsg);
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
    if (h->node == NULL) {
        tpdbErrf(errmsg, "%s", h->readonlyMsg);
        return TPDB_READONLY;
    }
    int rc =
        tpdbNodeCommitPart(h->node, h->name, part, h->parts++, final, errmsg);
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
