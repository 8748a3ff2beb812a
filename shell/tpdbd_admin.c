/*
 * tpdbd's cluster and file actions (tpdbd_admin.h). Membership changes
 * and transfers go through tpdb_remove(), tpdb_assign() and
 * tpdb_transfer() on a pooled
 * connection; checkpoints through sqlite3_wal_checkpoint_v2(); backups
 * through sqlite3_backup into a new file next to the target, which is
 * switched to rollback-journal mode (one self-contained file), fsynced
 * and renamed into place, then its directory fsynced; a streamed backup
 * copies the same way into a temporary file of the node directory, which
 * it reads back in chunks (bounded memory) with a SHA-256 of the whole.
 */
#include "shell/tpdbd_admin.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "ext/tpdb.h"
#include "shell/tpdbd_api.h"
#include "shell/tpdbd_log.h"
#include "shell/tpdbd_sql.h"

#define ERR_SIZE 1024
#define TRANSFER_WAIT_MS 10000

static char *dump(json_t *o)
{
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

static long long nowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The member with raft id id in status st, or NULL. Borrowed from st. */
static json_t *memberOf(json_t *st, uint64_t id)
{
    json_t *m;
    size_t i;
    json_array_foreach(json_object_get(st, "members"), i, m)
    {
        if ((uint64_t)json_integer_value(json_object_get(m, "id")) == id) {
            return m;
        }
    }
    return NULL;
}

static int statusSaysLeader(json_t *st)
{
    const char *role = json_string_value(json_object_get(st, "role"));
    return role != NULL && strcmp(role, "leader") == 0;
}

/* Runs `SELECT fn(id)` (one of tpdb's membership functions) on database
 * db. Returns SQLITE_OK or the code with err set. */
static int callFunction(struct tpdbd *d,
                        const char *db,
                        const char *sql,
                        uint64_t id,
                        const char *role,
                        char *err,
                        size_t size)
{
    sqlite3_stmt *st = NULL;
    struct tpdbd_conn *c = tpdbdPoolGet(d->pool, db, err, size);
    if (c == NULL) {
        return SQLITE_CANTOPEN;
    }
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
        if (role != NULL) {
            sqlite3_bind_text(st, 2, role, -1, SQLITE_STATIC);
        }
        rc = sqlite3_step(st) == SQLITE_ROW ? SQLITE_OK
                                            : sqlite3_extended_errcode(c->db);
    }
    if (rc != SQLITE_OK) {
        snprintf(err, size, "%s", sqlite3_errmsg(c->db));
    }
    sqlite3_finalize(st);
    tpdbdPoolPut(d->pool, c);
    return rc;
}

int tpdbdAdminRemove(struct tpdbd *d,
                     const char *db,
                     const char *node_id,
                     char **reply)
{
    char err[ERR_SIZE] = "", msg[ERR_SIZE + 128];
    uint64_t id = tpdbdRaftId(node_id);
    json_t *st = tpdbdStatus(d);
    int leader = statusSaysLeader(st);
    int member = memberOf(st, id) != NULL;
    json_decref(st);
    if (!leader) {
        return TPDB_ERR_NOTLEADER;
    }
    if (!member) {
        snprintf(msg, sizeof msg, "remove: '%s' is not a member", node_id);
        *reply = tpdbdErrorReply(msg);
        return SQLITE_NOTFOUND;
    }
    if (id == d->cfg.raft_id) {
        snprintf(msg, sizeof msg,
                 "remove: '%s' is the leader: transfer leadership first "
                 "(action transfer), then remove it through the new leader",
                 node_id);
        *reply = tpdbdErrorReply(msg);
        return SQLITE_MISUSE;
    }
    int rc =
        callFunction(d, db, "SELECT tpdb_remove(?)", id, NULL, err, sizeof err);
    if (rc == SQLITE_OK) {
        tpdbdLog(TPDBD_INFO, "removed node %s (raft id %llu)", node_id,
                 (unsigned long long)id);
        *reply = dump(json_pack("{s:b}", "ok", 1));
    } else {
        snprintf(msg, sizeof msg, "remove '%s': %s", node_id, err);
        *reply = tpdbdErrorReply(msg);
    }
    return rc;
}

int tpdbdAdminAssign(struct tpdbd *d,
                     const char *db,
                     const char *node_id,
                     const char *role,
                     char **reply)
{
    char err[ERR_SIZE] = "", msg[ERR_SIZE + 128];
    uint64_t id = tpdbdRaftId(node_id);
    json_t *st = tpdbdStatus(d);
    int leader = statusSaysLeader(st);
    int member = memberOf(st, id) != NULL;
    json_decref(st);
    if (!leader) {
        return TPDB_ERR_NOTLEADER;
    }
    if (!member) {
        snprintf(msg, sizeof msg, "assign: '%s' is not a member", node_id);
        *reply = tpdbdErrorReply(msg);
        return SQLITE_NOTFOUND;
    }
    if (id == d->cfg.raft_id && strcmp(role, "voter") != 0) {
        snprintf(msg, sizeof msg,
                 "assign: '%s' is the leader: transfer leadership first "
                 "(action transfer), then demote it through the new leader",
                 node_id);
        *reply = tpdbdErrorReply(msg);
        return SQLITE_MISUSE;
    }
    int rc = callFunction(d, db, "SELECT tpdb_assign(?, ?)", id, role, err,
                          sizeof err);
    if (rc == SQLITE_OK) {
        tpdbdLog(TPDBD_INFO, "node %s (raft id %llu) is now a %s", node_id,
                 (unsigned long long)id, role);
        *reply = dump(json_pack("{s:b}", "ok", 1));
    } else {
        snprintf(msg, sizeof msg, "assign '%s' as %s: %s", node_id, role, err);
        *reply = tpdbdErrorReply(msg);
    }
    return rc;
}

/* Polls the status until a leader other than this node is known; fills
 * leader (TPDBD_ID_MAX + 1 bytes, "" if none came within the wait). */
static void awaitNewLeader(struct tpdbd *d, char *leader)
{
    char client[TPDBD_ADDR_MAX];
    long long deadline = nowMs() + TRANSFER_WAIT_MS;
    leader[0] = '\0';
    while (nowMs() < deadline) {
        json_t *st = tpdbdStatus(d);
        uint64_t id =
            (uint64_t)json_integer_value(json_object_get(st, "leader_id"));
        json_decref(st);
        if (id != 0 && id != d->cfg.raft_id) {
            tpdbdNodeName(d, id, leader, client);
            return;
        }
        usleep(50 * 1000);
    }
}

/* Checks the transfer target in status st; returns an error reply or
 * NULL. */
static char *transferTarget(struct tpdbd *d, json_t *st, const char *node_id)
{
    char msg[256];
    uint64_t id = tpdbdRaftId(node_id);
    json_t *m = memberOf(st, id);
    const char *role = json_string_value(json_object_get(m, "role"));
    if (m == NULL) {
        snprintf(msg, sizeof msg, "transfer: '%s' is not a member", node_id);
    } else if (id == d->cfg.raft_id) {
        snprintf(msg, sizeof msg, "transfer: '%s' is the leader already",
                 node_id);
    } else if (role == NULL || strcmp(role, "voter") != 0) {
        snprintf(msg, sizeof msg,
                 "transfer: '%s' is a %s: only a voter can lead", node_id,
                 role != NULL ? role : "member of unknown role");
    } else {
        return NULL;
    }
    return tpdbdErrorReply(msg);
}

/* An error reply if no voter but this node could take over, else NULL. */
static char *anyVoter(struct tpdbd *d, json_t *st)
{
    json_t *m;
    size_t i;
    json_array_foreach(json_object_get(st, "members"), i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        if ((uint64_t)json_integer_value(json_object_get(m, "id")) !=
                d->cfg.raft_id &&
            role != NULL && strcmp(role, "voter") == 0) {
            return NULL;
        }
    }
    return tpdbdErrorReply("transfer: no other voter to take over");
}

int tpdbdAdminTransfer(struct tpdbd *d,
                       const char *db,
                       const char *node_id,
                       char **reply)
{
    char err[ERR_SIZE] = "", msg[ERR_SIZE + 128];
    char leader[TPDBD_ID_MAX + 1];
    json_t *st = tpdbdStatus(d);
    if (!statusSaysLeader(st)) {
        json_decref(st);
        return TPDB_ERR_NOTLEADER;
    }
    *reply = node_id != NULL ? transferTarget(d, st, node_id) : anyVoter(d, st);
    json_decref(st);
    if (*reply != NULL) {
        return SQLITE_MISUSE;
    }
    uint64_t id = node_id != NULL ? tpdbdRaftId(node_id) : 0;
    int rc = callFunction(d, db, "SELECT tpdb_transfer(?)", id, NULL, err,
                          sizeof err);
    if (rc != SQLITE_OK) {
        snprintf(msg, sizeof msg, "transfer: %s", err);
        *reply = tpdbdErrorReply(msg);
        return rc;
    }
    awaitNewLeader(d, leader);
    tpdbdLog(TPDBD_INFO, "leadership transferred to %s",
             leader[0] ? leader : "(not known yet)");
    *reply = dump(json_pack("{s:b,s:s}", "ok", 1, "leader_id", leader));
    return SQLITE_OK;
}

/* Whether database db exists in the node directory; if not, err says so. */
static int dbExists(struct tpdbd *d, const char *db, char *err, size_t size)
{
    char path[PATH_MAX + 80];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", d->dir, db);
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        snprintf(err, size, "no database %s in the node directory", db);
        return 0;
    }
    return 1;
}

static long long fileSize(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : 0;
}

char *tpdbdAdminCheckpoint(struct tpdbd *d, const char *db)
{
    char err[ERR_SIZE] = "", msg[ERR_SIZE + 64], wal[PATH_MAX + 80];
    int log = -1, done = -1;
    if (!dbExists(d, db, err, sizeof err)) {
        return tpdbdErrorReply(err);
    }
    struct tpdbd_conn *c = tpdbdPoolGet(d->pool, db, err, sizeof err);
    if (c == NULL) {
        return tpdbdErrorReply(err);
    }
    int rc = sqlite3_wal_checkpoint_v2(c->db, "main",
                                       SQLITE_CHECKPOINT_TRUNCATE, &log, &done);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
        snprintf(msg, sizeof msg, "checkpoint %s: %s", db,
                 sqlite3_errmsg(c->db));
    }
    tpdbdPoolPut(d->pool, c);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
        return tpdbdErrorReply(msg);
    }
    snprintf(wal, sizeof wal, "%s/%s-wal", d->dir, db);
    return dump(json_pack("{s:b,s:s,s:b,s:i,s:i,s:I}", "ok", 1, "db", db,
                          "busy", rc == SQLITE_BUSY, "log_frames", log,
                          "checkpointed_frames", done, "wal_bytes",
                          (json_int_t)fileSize(wal)));
}

/* Checks the backup target; returns 0 or -1 with err set. */
static int backupPathOk(struct tpdbd *d,
                        const char *path,
                        char *err,
                        size_t size)
{
    char copy[PATH_MAX], parent[PATH_MAX], node[PATH_MAX];
    struct stat sb;
    if (path[0] != '/' || strlen(path) + 16 >= PATH_MAX) {
        snprintf(err, size,
                 "backup: path must be absolute (and shorter "
                 "than PATH_MAX)");
        return -1;
    }
    snprintf(copy, sizeof copy, "%s", path);
    if (realpath(dirname(copy), parent) == NULL ||
        realpath(d->dir, node) == NULL) {
        snprintf(err, size, "backup: directory of %s: %s", path,
                 strerror(errno));
        return -1;
    }
    size_t n = strlen(node);
    if (strncmp(parent, node, n) == 0 &&
        (parent[n] == '/' || parent[n] == '\0')) {
        snprintf(err, size,
                 "backup: %s is inside the node directory: write it "
                 "elsewhere",
                 path);
        return -1;
    }
    if (lstat(path, &sb) == 0) {
        snprintf(err, size, "backup: %s exists: give a new path", path);
        return -1;
    }
    return 0;
}

/* Copies src into the empty file tmp and leaves it self-contained. */
static int copyInto(sqlite3 *src,
                    const char *tmp,
                    int *pages,
                    char *err,
                    size_t size)
{
    sqlite3 *dst = NULL;
    int rc = sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
        if (b == NULL) {
            rc = sqlite3_extended_errcode(dst);
        } else {
            rc = sqlite3_backup_step(b, -1);
            *pages = sqlite3_backup_pagecount(b);
            sqlite3_backup_finish(b);
            rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
        }
    }
    if (rc == SQLITE_OK) {
        /* The pages say WAL mode, as the source's: one file instead. */
        rc = sqlite3_exec(dst, "PRAGMA journal_mode=DELETE", NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK) {
        snprintf(err, size, "backup: %s",
                 dst != NULL ? sqlite3_errmsg(dst) : "out of memory");
    }
    if (sqlite3_close(dst) != SQLITE_OK && rc == SQLITE_OK) {
        snprintf(err, size, "backup: closing the copy failed");
        rc = SQLITE_ERROR;
    }
    return rc;
}

static int fsyncPath(const char *path, int flags)
{
    int fd = open(path, flags | O_CLOEXEC);
    int rc = fd >= 0 && fsync(fd) == 0 ? 0 : -1;
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

/* Makes tmp durable and renames it to path. */
static int publish(const char *tmp, const char *path, char *err, size_t size)
{
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", path);
    if (fsyncPath(tmp, O_RDONLY) != 0 || rename(tmp, path) != 0 ||
        fsyncPath(dirname(copy), O_RDONLY | O_DIRECTORY) != 0) {
        snprintf(err, size, "backup: writing %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

char *tpdbdAdminBackup(struct tpdbd *d, const char *db, const char *path)
{
    char err[ERR_SIZE] = "", tmp[PATH_MAX];
    int pages = 0;
    if (!dbExists(d, db, err, sizeof err) ||
        backupPathOk(d, path, err, sizeof err) != 0) {
        return tpdbdErrorReply(err);
    }
    snprintf(tmp, sizeof tmp, "%s.partial", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, sizeof err, "backup: create %.700s: %s", tmp,
                 strerror(errno));
        return tpdbdErrorReply(err);
    }
    close(fd);
    struct tpdbd_conn *c = tpdbdPoolGet(d->pool, db, err, sizeof err);
    int rc = c != NULL ? copyInto(c->db, tmp, &pages, err, sizeof err)
                       : SQLITE_CANTOPEN;
    tpdbdPoolPut(d->pool, c);
    if (rc != SQLITE_OK || publish(tmp, path, err, sizeof err) != 0) {
        unlink(tmp);
        return tpdbdErrorReply(err);
    }
    tpdbdLog(TPDBD_INFO, "backup of %s written to %s (%d pages)", db, path,
             pages);
    return dump(json_pack("{s:b,s:s,s:s,s:i,s:I}", "ok", 1, "db", db, "path",
                          path, "pages", pages, "bytes",
                          (json_int_t)fileSize(path)));
}

#define STREAM_PREFIX "stream-backup-"

/* Makes the empty temporary file of a streamed backup in DIR/.tpdb/. */
static int streamTemp(struct tpdbd *d, char *tmp, size_t n, char *err)
{
    if ((size_t)snprintf(tmp, n, "%s/.tpdb/" STREAM_PREFIX "XXXXXX", d->dir) >=
        n) {
        snprintf(err, ERR_SIZE, "backup: node directory path too long");
        return -1;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        snprintf(err, ERR_SIZE, "backup: create %.700s: %s", tmp,
                 strerror(errno));
        return -1;
    }
    close(fd);
    return 0;
}

/* Copies db into the temporary file and opens it for reading; the name
 * is unlinked whatever happens. Returns the fd, or -1 with err set. */
static int streamCopy(struct tpdbd *d, const char *db, int *pages, char *err)
{
    char tmp[PATH_MAX + 64];
    if (streamTemp(d, tmp, sizeof tmp, err) != 0) {
        return -1;
    }
    struct tpdbd_conn *c = tpdbdPoolGet(d->pool, db, err, ERR_SIZE);
    int rc = c != NULL ? copyInto(c->db, tmp, pages, err, ERR_SIZE)
                       : SQLITE_CANTOPEN;
    tpdbdPoolPut(d->pool, c);
    int fd = rc == SQLITE_OK ? open(tmp, O_RDONLY | O_CLOEXEC) : -1;
    if (rc == SQLITE_OK && fd < 0) {
        snprintf(err, ERR_SIZE, "backup: open the copy: %s", strerror(errno));
    }
    unlink(tmp);
    return fd;
}

/* Sends one line through out (text consumed); sets out->failed. */
static int sinkLine(struct tpdbd_sink *out, char *text)
{
    int rc = text != NULL ? out->send(out->arg, text, strlen(text)) : -1;
    free(text);
    if (rc != 0) {
        out->failed = 1;
    }
    return rc;
}

/* One chunk line of buf[0..n) at offset off. */
static char *chunkLine(const unsigned char *buf, size_t n, long long off)
{
    char *b64 = tpdbdBase64Encode(buf, n);
    char *line = NULL;
    if (b64 != NULL &&
        asprintf(&line, "{\"offset\":%lld,\"data\":\"%s\"}", off, b64) < 0) {
        line = NULL;
    }
    free(b64);
    return line;
}

static void hexOf(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Streams the file fd of size bytes as chunk lines; fills sha (hex).
 * Returns 0, or -1 with err set (out->failed if the client is gone). */
static int streamChunks(int fd,
                        long long size,
                        struct tpdbd_sink *out,
                        char *sha,
                        char *err)
{
    static const size_t chunk = TPDBD_STREAM_CHUNK;
    unsigned char *buf = malloc(chunk), digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_state h;
    long long off = 0;
    crypto_hash_sha256_init(&h);
    while (buf != NULL && off < size) {
        ssize_t n = pread(fd, buf, chunk, (off_t)off);
        if (n <= 0) {
            snprintf(err, ERR_SIZE, "backup: read the copy at %lld: %s", off,
                     n < 0 ? strerror(errno) : "short file");
            free(buf);
            return -1;
        }
        crypto_hash_sha256_update(&h, buf, (unsigned long long)n);
        if (sinkLine(out, chunkLine(buf, (size_t)n, off)) != 0) {
            snprintf(err, ERR_SIZE, "backup: the client went away at %lld",
                     off);
            free(buf);
            return -1;
        }
        off += n;
    }
    if (buf == NULL) {
        snprintf(err, ERR_SIZE, "backup: out of memory");
        return -1;
    }
    free(buf);
    crypto_hash_sha256_final(&h, digest);
    hexOf(digest, sizeof digest, sha);
    return 0;
}

char *tpdbdAdminBackupStream(struct tpdbd *d,
                             const char *db,
                             struct tpdbd_sink *out)
{
    char err[ERR_SIZE] = "", sha[2 * crypto_hash_sha256_BYTES + 1];
    struct stat sb;
    int pages = 0;
    if (!dbExists(d, db, err, sizeof err)) {
        return tpdbdErrorReply(err);
    }
    int fd = streamCopy(d, db, &pages, err);
    if (fd < 0) {
        return tpdbdErrorReply(err);
    }
    if (fstat(fd, &sb) != 0) {
        snprintf(err, sizeof err, "backup: stat the copy: %s", strerror(errno));
        close(fd);
        return tpdbdErrorReply(err);
    }
    long long size = (long long)sb.st_size;
    int rc = sinkLine(out, dump(json_pack("{s:b,s:s,s:s,s:i,s:I}", "ok", 1,
                                          "stream", "backup", "db", db, "pages",
                                          pages, "bytes", (json_int_t)size)));
    if (rc == 0) {
        rc = streamChunks(fd, size, out, sha, err);
    }
    close(fd);
    if (rc != 0) {
        tpdbdLog(TPDBD_INFO, "streamed backup of %s ended early: %s", db,
                 out->failed ? "the client went away" : err);
        return tpdbdErrorReply(err);
    }
    tpdbdLog(TPDBD_INFO, "backup of %s streamed (%d pages, %lld bytes)", db,
             pages, size);
    return dump(json_pack("{s:b,s:b,s:s,s:I,s:s}", "ok", 1, "done", 1, "db", db,
                          "bytes", (json_int_t)size, "sha256", sha));
}

void tpdbdAdminCleanup(const char *dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/.tpdb", dir);
    DIR *dh = opendir(path);
    struct dirent *e;
    while (dh != NULL && (e = readdir(dh)) != NULL) {
        if (strncmp(e->d_name, STREAM_PREFIX, strlen(STREAM_PREFIX)) == 0 &&
            strlen(path) + strlen(e->d_name) + 2 < sizeof path) {
            char file[PATH_MAX + 256];
            snprintf(file, sizeof file, "%s/%s", path, e->d_name);
            tpdbdLog(TPDBD_INFO, "removing %s, left by a streamed backup",
                     file);
            unlink(file);
        }
    }
    if (dh != NULL) {
        closedir(dh);
    }
}
