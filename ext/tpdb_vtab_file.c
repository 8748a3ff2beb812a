/*
 * tpdb_table's shared file handles (tpdb_vtab_int.h): one per file and
 * connection, and when it is held. A file in a node's data directory (a
 * node of this process runs there, or the directory holds the `.tpdb`
 * directory of a node) is transient: its handle, and so its flock, is open
 * only while a statement has a cursor on it, while a table on it is in a
 * write transaction (xBegin to xCommit/xRollback) or during planning, so
 * that the node's state machine can write replicated commits into the file
 * whenever no statement uses it. Any other file keeps its handle open for
 * the life of its tables, which saves reopening it. Also: the replication
 * hooks of a file in a running node's directory, and value conversion.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "ext/tpdb_vtab_int.h"
#include "vfs/vfs.h"

#ifdef TPDB_VTAB_REPLICATE
#include "raftfsm/entry.h"
#include "raftfsm/node.h"
#endif

/* How long reopening a transient file waits while the node writes a
 * replicated commit into it (an apply takes milliseconds). */
#define HOLD_WAIT_MS 2000

/* ---- Shared file handles ------------------------------------------------ */

static int dirWritable(const char *real)
{
    const char *slash = strrchr(real, '/');
    char dir[PATH_MAX];
    size_t n = slash == NULL ? 0 : (size_t)(slash - real);
    if (n == 0) {
        return access(slash == NULL ? "." : "/", W_OK) == 0;
    }
    memcpy(dir, real, n);
    dir[n] = '\0';
    return access(dir, W_OK) == 0;
}

/* Whether the file `real` (a realpath) lies in a node's data directory:
 * a node of this process runs there, or the directory holds `.tpdb/`
 * (a node in another process, or one not started yet, writes there). */
static int inNodeDir(const char *real)
{
    char meta[PATH_MAX];
    struct stat st;
    const char *slash = strrchr(real, '/');
    size_t n = slash == NULL ? 0 : (size_t)(slash - real);
#ifdef TPDB_VTAB_REPLICATE
    if (tpdbNodeFind(real) != NULL) {
        return 1;
    }
#endif
    if (n + sizeof "/.tpdb" > sizeof meta) {
        return 0;
    }
    memcpy(meta, real, n);
    memcpy(meta + n, "/.tpdb", sizeof "/.tpdb");
    return stat(meta, &st) == 0 && S_ISDIR(st.st_mode);
}

int vtabParseMode(const char *s, int *mode)
{
    if (s == NULL || s[0] == '\0') {
        *mode = VTAB_MODE_AUTO;
    } else if (strcmp(s, "rw") == 0) {
        *mode = VTAB_MODE_RW;
    } else if (strcmp(s, "ro") == 0) {
        *mode = VTAB_MODE_RO;
    } else {
        return -1;
    }
    return 0;
}

/* Closes the handle (and drops its replication state). */
static void sharedClose(struct sharedFile *sf)
{
    tpdb_file_close(sf->f);
    sf->f = NULL;
    tpdb_free(sf->repl);
    sf->repl = NULL;
}

static void sharedFree(struct sharedFile *sf)
{
    sharedClose(sf);
    tpdb_free(sf->sp);
    tpdb_free(sf->key);
    tpdb_free(sf);
}

#ifdef TPDB_VTAB_REPLICATE
/* ---- Replication ---------------------------------------------------------
 * A read-write file in the data directory of a node running in this process
 * is replicated: its commits go through the node as TPDB_ENTRY_TPDBFILE
 * entries before they are written, and writes are refused on a follower
 * with the leader's address. Followers' FSMs write the entries to their own
 * copies (tpdb_file_apply) while no handle holds them, which is why such a
 * file is transient. The hooks are installed at every reopen; the first
 * commit of a file the cluster never carried carries the whole file
 * (tpdbfile.h), in parts of TPDB_FILE_REPL_PART_PAGES pages when larger;
 * so does any later commit of more changed pages than that. */
struct vtabRepl {
    struct tpdb_node *node;
    char name[TPDB_DBNAME_MAX + 1]; /* file name in the data directory */
    int acked; /* the node acknowledged a commit not yet written */
};

static int replWriteCheck(void *arg, char *errmsg)
{
    struct vtabRepl *r = arg;
    return tpdbNodeWriteCheck(r->node, r->name, errmsg);
}

static int replCommit(void *arg, const struct tpdb_txn *txn, char *errmsg)
{
    struct vtabRepl *r = arg;
    int rc =
        tpdbNodePropose(r->node, TPDB_ENTRY_TPDBFILE, r->name, txn, errmsg);
    r->acked = rc == TPDB_OK;
    return rc;
}

/* A whole file the cluster never carried, too large for one entry: its
 * parts go out as a chunk sequence (TPDB_ENTRY_TPDBFILE_BEGIN), so that no
 * entry and no buffer holds the whole file. */
static int replCommitPart(void *arg,
                          const struct tpdb_txn *part,
                          unsigned index,
                          int final,
                          char *errmsg)
{
    struct vtabRepl *r = arg;
    int rc =
        tpdbNodeCommitFilePart(r->node, r->name, part, index, final, errmsg);
    r->acked = final && rc == TPDB_OK;
    return rc;
}

/* A commit of changes too large for one entry: a chunk sequence opened
 * by TPDB_ENTRY_TPDBFILE_DELTA, which followers stage aside and commit
 * whole at its end. */
static int replCommitDeltaPart(void *arg,
                               const struct tpdb_txn *part,
                               unsigned index,
                               int final,
                               char *errmsg)
{
    struct vtabRepl *r = arg;
    int rc =
        tpdbNodeCommitDeltaPart(r->node, r->name, part, index, final, errmsg);
    r->acked = final && rc == TPDB_OK;
    return rc;
}

static void replDone(void *arg, int written)
{
    struct vtabRepl *r = arg;
    if (r->acked) {
        r->acked = 0;
        tpdbNodeOwnWriteDone(r->node, r->name, written);
    }
}

/* The handle is reopened for every write transaction: only a file the
 * cluster has never carried needs its whole content in the first commit. */
static int replNeedsFull(void *arg)
{
    struct vtabRepl *r = arg;
    return !tpdbNodeKnows(r->node, r->name);
}

/* Installs the hooks when the file lies in a running node's data
 * directory. */
static int replInstall(struct sharedFile *sf, char **pzErr)
{
    struct tpdb_node *node = tpdbNodeFind(sf->key);
    const char *slash = strrchr(sf->key, '/');
    const char *name = slash == NULL ? sf->key : slash + 1;
    if (node == NULL || sf->rdonly) {
        return SQLITE_OK;
    }
    if (name[0] == '\0' || name[0] == '.' || strlen(name) > TPDB_DBNAME_MAX) {
        *pzErr = sqlite3_mprintf(
            "tpdb_table: %s: file name cannot be replicated", sf->key);
        return SQLITE_ERROR;
    }
    struct vtabRepl *r = tpdb_calloc(1, sizeof *r);
    if (r == NULL) {
        return SQLITE_NOMEM;
    }
    r->node = node;
    snprintf(r->name, sizeof r->name, "%s", name);
    struct tpdb_file_hooks hooks = {
        .version = 3,
        .arg = r,
        .write_check = replWriteCheck,
        .commit = replCommit,
        .done = replDone,
        .needs_full = replNeedsFull,
        .commit_part = replCommitPart,
        .commit_delta_part = replCommitDeltaPart,
    };
    if (tpdb_file_set_hooks(sf->f, &hooks) != TPDB_OK) {
        *pzErr = sqlite3_mprintf("%s", tpdb_file_errmsg(sf->f));
        tpdb_free(r);
        return SQLITE_ERROR;
    }
    sf->repl = r;
    return SQLITE_OK;
}
#endif

/* Opens the handle, waiting up to HOLD_WAIT_MS while another handle (the
 * node's state machine writing a commit) holds a transient file. */
static int sharedOpen(struct sharedFile *sf, char **pzErr)
{
    char errmsg[TPDB_ERRMSG_SIZE];
    int flags = sf->rdonly ? TPDB_FILE_RDONLY : 0;
    uint64_t deadline = tpdbNowMs() + HOLD_WAIT_MS;
    int rc;
    while ((rc = tpdb_file_open(sf->key, flags, &sf->f, errmsg)) == TPDB_BUSY &&
           sf->transient && tpdbNowMs() < deadline) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (rc != TPDB_OK) {
        *pzErr = sqlite3_mprintf("%s", errmsg);
        return rc == TPDB_NOMEM  ? SQLITE_NOMEM
               : rc == TPDB_BUSY ? SQLITE_BUSY
                                 : SQLITE_CANTOPEN;
    }
    sf->gen++;
#ifdef TPDB_VTAB_REPLICATE
    rc = replInstall(sf, pzErr);
    if (rc != SQLITE_OK) {
        sharedClose(sf);
        return rc;
    }
#endif
    return SQLITE_OK;
}

int vtabFileHold(struct sharedFile *sf, char **pzErr)
{
    if (sf->f == NULL) {
        int rc = sharedOpen(sf, pzErr);
        if (rc != SQLITE_OK) {
            return rc;
        }
    }
    sf->holds++;
    return SQLITE_OK;
}

void vtabFileUnhold(struct sharedFile *sf)
{
    if (sf->holds > 0) {
        sf->holds--;
    }
    if (sf->transient && sf->holds == 0 && !sf->txn) {
        sharedClose(sf);
    }
}

/* An existing shared file of the connection for `real`: a new reference
 * and a hold. */
static int sharedReuse(struct sharedFile *sf,
                       const char *path,
                       int mode,
                       char **pzErr)
{
    if (mode == VTAB_MODE_RW && sf->rdonly) {
        *pzErr = sqlite3_mprintf(
            "tpdb_table: %s is already open read-only on this connection",
            path);
        return SQLITE_ERROR;
    }
    int rc = vtabFileHold(sf, pzErr);
    if (rc == SQLITE_OK) {
        sf->refs++;
    }
    return rc;
}

int vtabFileAcquire(struct registry *reg,
                    const char *path,
                    int mode,
                    struct sharedFile **out,
                    char **pzErr)
{
    char real[PATH_MAX];
    struct sharedFile *sf;
    if (realpath(path, real) == NULL) {
        *pzErr = sqlite3_mprintf("tpdb_table: %s: %s", path, strerror(errno));
        return SQLITE_CANTOPEN;
    }
    for (sf = reg->files; sf != NULL; sf = sf->next) {
        if (strcmp(sf->key, real) == 0) {
            *out = sf;
            return sharedReuse(sf, path, mode, pzErr);
        }
    }
    sf = tpdb_calloc(1, sizeof *sf);
    if (sf == NULL || (sf->key = tpdb_strdup(real)) == NULL) {
        tpdb_free(sf);
        return SQLITE_NOMEM;
    }
    sf->rdonly = mode == VTAB_MODE_RO ||
                 (mode == VTAB_MODE_AUTO &&
                  (access(real, W_OK) != 0 || !dirWritable(real)));
    sf->transient = inNodeDir(real);
    int rc = vtabFileHold(sf, pzErr);
    if (rc != SQLITE_OK) {
        sharedFree(sf);
        return rc;
    }
    sf->refs = 1;
    sf->next = reg->files;
    reg->files = sf;
    *out = sf;
    return SQLITE_OK;
}

void vtabFileRelease(struct registry *reg, struct sharedFile *sf)
{
    if (--sf->refs > 0) {
        return;
    }
    for (struct sharedFile **pp = &reg->files; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == sf) {
            *pp = sf->next;
            break;
        }
    }
    sharedFree(sf);
}

void vtabRegistryDestroy(void *arg)
{
    struct registry *reg = arg;
    while (reg->files != NULL) {
        struct sharedFile *sf = reg->files;
        reg->files = sf->next;
        sharedFree(sf);
    }
    tpdb_free(reg);
}

/* ---- Value conversion ---------------------------------------------------- */

int vtabSqliteRc(int rc)
{
    switch (rc) {
        case TPDB_OK:
            return SQLITE_OK;
        case TPDB_NOMEM:
            return SQLITE_NOMEM;
        case TPDB_IOERR:
            return SQLITE_IOERR;
        case TPDB_FULL:
            return SQLITE_FULL;
        case TPDB_CORRUPT:
            return SQLITE_CORRUPT;
        case TPDB_BUSY:
            return SQLITE_BUSY;
        case TPDB_READONLY:
            return SQLITE_READONLY;
        case TPDB_TOOBIG:
            return SQLITE_TOOBIG;
        case TPDB_INVALID:
            return SQLITE_CONSTRAINT;
        case TPDB_NOTLEADER:
            return TPDB_SQLITE_NOTLEADER;
        case TPDB_UNKNOWN:
            return TPDB_SQLITE_UNKNOWN;
        default:
            return SQLITE_ERROR;
    }
}

void vtabResultValue(sqlite3_context *ctx, const struct tpdb_value *v)
{
    switch (v->type) {
        case TPDB_VINT:
        case TPDB_VBOOL:
            sqlite3_result_int64(ctx, v->i);
            break;
        case TPDB_VREAL:
            sqlite3_result_double(ctx, v->r);
            break;
        case TPDB_VTEXT:
            sqlite3_result_text64(ctx, (const char *)v->base, v->len,
                                  SQLITE_TRANSIENT, SQLITE_UTF8);
            break;
        case TPDB_VBLOB:
            sqlite3_result_blob64(ctx, v->len == 0 ? "" : (const void *)v->base,
                                  v->len, SQLITE_TRANSIENT);
            break;
        default:
            sqlite3_result_null(ctx);
            break;
    }
}

int vtabParseInt64(const char *s, size_t len, int64_t *out)
{
    char buf[32];
    char *end;
    if (len == 0 || len >= sizeof buf) {
        return -1;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (!((buf[0] >= '0' && buf[0] <= '9') || buf[0] == '-' || buf[0] == '+')) {
        return -1;
    }
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0') {
        return -1;
    }
    *out = v;
    return 0;
}

int vtabRealToInt64(double d, int64_t *out)
{
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) {
        return -1;
    }
    int64_t i = (int64_t)d;
    if ((double)i != d) {
        return -1;
    }
    *out = i;
    return 0;
}

/* Converts an SQLite value; `int_affinity` applies INTEGER affinity as SQLite
 * would for a column whose declared type contains "INT". Bytes point into
 * the SQLite value. */
void vtabValueFromSqlite(sqlite3_value *v,
                         int int_affinity,
                         struct tpdb_value *out)
{
    memset(out, 0, sizeof *out);
    switch (sqlite3_value_type(v)) {
        case SQLITE_INTEGER:
            out->type = TPDB_VINT;
            out->i = sqlite3_value_int64(v);
            break;
        case SQLITE_FLOAT:
            out->type = TPDB_VREAL;
            out->r = sqlite3_value_double(v);
            if (int_affinity && vtabRealToInt64(out->r, &out->i) == 0) {
                out->type = TPDB_VINT;
            }
            break;
        case SQLITE_TEXT:
            out->type = TPDB_VTEXT;
            out->base = sqlite3_value_text(v);
            out->len = (size_t)sqlite3_value_bytes(v);
            if (int_affinity && vtabParseInt64((const char *)out->base,
                                               out->len, &out->i) == 0) {
                out->type = TPDB_VINT;
            }
            break;
        case SQLITE_BLOB:
            out->type = TPDB_VBLOB;
            out->base = sqlite3_value_blob(v);
            out->len = (size_t)sqlite3_value_bytes(v);
            if (out->base == NULL) {
                out->base = (const uint8_t *)"";
            }
            break;
        default:
            out->type = TPDB_VNULL;
            break;
    }
}

int vtabBoundValue(sqlite3_value *v, int64_t *out)
{
    struct tpdb_value tv;
    vtabValueFromSqlite(v, 1, &tv);
    if (tv.type != TPDB_VINT) {
        return -1;
    }
    *out = tv.i;
    return 0;
}
