/*
 * Other processes' writes through this machine's node (see local.h). Frames
 * on the unix socket, integers little-endian:
 *
 *   request: offset size
 *              0    4  length L of what follows
 *              4    1  op: 1 CHECK, 2 WAIT, 3 COMMIT, 4 PART, 5 DONE,
 *                      6 ADOPT
 *              5    1  PART: final; DONE: written
 *              6    2  name length N (1..255)
 *              8    4  PART: part index
 *             12    N  database file name
 *   COMMIT and PART go on with page_size, db_pages, n_pages (4 bytes
 *   each), then n_pages times: pgno (4), the page (page_size).
 *   reply:     0    4  length L, 4..TPDB_ERRMSG_SIZE+3
 *              4    4  TPDB_* code (DONE has no reply)
 *              8  L-4  the error message, no terminator
 *
 * The server runs an accept thread and a thread per client stream (at
 * most CONNS_MAX), with blocking I/O; each serves one request at a time,
 * its buffer growing with the bytes that arrive.
 */
#include "raftfsm/local.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <sqlite3.h>

#include "raftfsm/entry.h"
#include "raftfsm/fsm.h"
#include "raftfsm/node.h"
#include "vfs/vfs.h"

enum { OP_CHECK = 1, OP_WAIT, OP_COMMIT, OP_PART, OP_DONE, OP_ADOPT };

/* A request's buffer grows by this much at first (recvRequest). */
#define RECV_STEP ((size_t)1 << 20)
/* Client streams served at once; more are closed at accept (each has a
 * thread). A process opens one per connection that writes. */
#define CONNS_MAX 1024

#define REQ_HDR 12
#define TXN_HDR 12
/* The largest request: a part of TPDB_VFS_PART_PAGES pages of 64 KiB. */
#define REQ_MAX \
    (REQ_HDR + 255 + TXN_HDR + (size_t)TPDB_VFS_PART_PAGES * (4 + 65536))

/* Writes every byte of iov[0..n) (MSG_NOSIGNAL: a dead peer is EPIPE, not a
 * signal). Returns 0, or -1 with errno. */
static int sendAll(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = iov;
        m.msg_iovlen = (size_t)(n > 512 ? 512 : n);
        ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0) {
            return -1;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* Reads exactly len bytes. Returns 0, 1 at end of stream before the first
 * byte, or -1 (errno; EPIPE for an end in the middle). */
static int recvAll(int fd, void *buf, size_t len)
{
    size_t have = 0;
    while (have < len) {
        ssize_t r = read(fd, (char *)buf + have, len - have);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return -1;
        }
        if (r == 0) {
            errno = EPIPE;
            return have == 0 ? 1 : -1;
        }
        have += (size_t)r;
    }
    return 0;
}

static int sockAddress(const char *meta_dir,
                       struct sockaddr_un *sa,
                       char *errmsg)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    int n = snprintf(sa->sun_path, sizeof sa->sun_path, "%s/%s", meta_dir,
                     TPDB_LOCAL_SOCK);
    if (n < 0 || (size_t)n >= sizeof sa->sun_path) {
        tpdbErrf(errmsg,
                 "%s/%s: longer than a unix socket path may be (%zu bytes)",
                 meta_dir, TPDB_LOCAL_SOCK, sizeof sa->sun_path - 1);
        return TPDB_IOERR;
    }
    return TPDB_OK;
}

/* ---- server ---- */

struct localConn {
    struct tpdb_local_server *s;
    int fd;
    pthread_t thread;
    int done; /* the thread ended (guarded by s->mutex) */
    /* The client's write session: from a passed write check until DONE,
     * the node holds other writes of db (tpdbNodeHoldWrites). */
    int held;
    char db[256];
    /* Its transaction, once acknowledged and until DONE: the request that
     * carried it (a whole commit) or NULL (a large one's last part). */
    int acked;
    uint8_t *ackedReq;
    struct tpdb_txn ackedTxn;
    struct localConn *next;
};

struct tpdb_local_server {
    struct tpdb_node *node;
    char dataDir[PATH_MAX];
    struct sockaddr_un sa;
    int fd;
    pthread_t thread;
    pthread_mutex_t mutex;
    int closing;
    struct localConn *conns;
};

static int sendReply(int fd, int rc, const char *msg)
{
    uint8_t hdr[8];
    size_t len = msg != NULL ? strnlen(msg, TPDB_ERRMSG_SIZE - 1) : 0;
    tpdbPut32(hdr, (uint32_t)(4 + len));
    tpdbPut32(hdr + 4, (uint32_t)rc);
    struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)msg, len}};
    return sendAll(fd, iov, len > 0 ? 2 : 1);
}

/* Decodes a COMMIT or PART body into txn, pages pointing into body. */
static int txnDecode(uint8_t *body,
                     size_t len,
                     struct tpdb_txn *txn,
                     char *errmsg)
{
    if (len < TXN_HDR) {
        tpdbErrf(errmsg, "local request: short transaction header");
        return TPDB_PROTO;
    }
    txn->page_size = tpdbGet32(body);
    txn->db_pages = tpdbGet32(body + 4);
    txn->n_pages = tpdbGet32(body + 8);
    uint64_t want =
        (uint64_t)txn->n_pages * (4 + (uint64_t)txn->page_size) + TXN_HDR;
    if (txn->page_size < 512 || txn->page_size > 65536 ||
        (txn->page_size & (txn->page_size - 1)) != 0 || txn->n_pages == 0 ||
        want != len) {
        tpdbErrf(errmsg, "local request: bad transaction shape");
        return TPDB_PROTO;
    }
    txn->pages = tpdb_calloc(txn->n_pages, sizeof *txn->pages);
    if (txn->pages == NULL) {
        tpdbErrf(errmsg, "local request: out of memory");
        return TPDB_NOMEM;
    }
    uint8_t *p = body + TXN_HDR;
    for (uint32_t i = 0; i < txn->n_pages; i++) {
        txn->pages[i].pgno = tpdbGet32(p);
        txn->pages[i].data = p + 4;
        p += 4 + txn->page_size;
    }
    return TPDB_OK;
}

/* Writes the acknowledged transaction of a client that went away before
 * saying it wrote it (see local.h). Other writes of the database are held
 * meanwhile. */
static void finishAcked(struct localConn *c)
{
    struct tpdb_local_server *s = c->s;
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    char path[PATH_MAX + 300];
    sqlite3 *db = NULL;
    int rc = TPDB_IOERR;
    if (c->ackedReq != NULL) {
        snprintf(path, sizeof path, "%s/%s", s->dataDir, c->db);
        char *uri = tpdbUriOfPath(path, TPDB_URI_INTERNAL "=1");
        int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI;
        if (uri == NULL) {
            tpdbErrf(errmsg, "open: out of memory");
        } else if (sqlite3_open_v2(uri, &db, flags, "tpdb") == SQLITE_OK) {
            rc = tpdbVfsApply(db, &c->ackedTxn, 1, 10000, errmsg);
        } else {
            tpdbErrf(errmsg, "open: %s", db ? sqlite3_errmsg(db) : "no memory");
        }
        tpdb_free(uri);
        sqlite3_close(db);
    } else {
        tpdbErrf(errmsg, "a large transaction cannot be written again here");
    }
    if (rc != TPDB_OK) {
        tpdbLog(TPDB_LOG_ERROR,
                "%s: the process that committed a transaction through this "
                "node went away before writing it, and this node could not "
                "write it: %s",
                c->db, errmsg);
    } else {
        tpdbLog(TPDB_LOG_WARN,
                "%s: the process that committed a transaction through this "
                "node went away before saying it wrote it: written here",
                c->db);
    }
    tpdbNodeOwnWriteDone(s->node, c->db, rc == TPDB_OK);
}

static void ackClear(struct localConn *c)
{
    c->acked = 0;
    tpdb_free(c->ackedTxn.pages);
    memset(&c->ackedTxn, 0, sizeof c->ackedTxn);
    tpdb_free(c->ackedReq);
    c->ackedReq = NULL;
}

/* Ends the client's write session: DONE, or the stream's end. */
static void sessionEnd(struct localConn *c, int written, int lost)
{
    if (c->acked) {
        if (lost) {
            finishAcked(c);
        } else {
            tpdbNodeOwnWriteDone(c->s->node, c->db, written);
        }
        ackClear(c);
    }
    if (c->held) {
        c->held = 0;
        tpdbNodeHoldWrites(c->s->node, c->db, 0);
    }
}

/* A database the client opens: made part of the cluster as a local open
 * would (tpdbNodeAdopt), before any write of the client reaches it. */
static int serveAdopt(struct localConn *c, const char *db)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    char path[PATH_MAX + 300];
    snprintf(path, sizeof path, "%s/%s", c->s->dataDir, db);
    int rc = tpdbNodeAdopt(c->s->node, db, path, errmsg);
    return sendReply(c->fd, rc, errmsg);
}

static int serveCheck(struct localConn *c, const char *db)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    if (c->held && (strcmp(c->db, db) != 0 || c->acked)) {
        return -1; /* one write session at a time per stream */
    }
    if (c->held) {
        /* This stream's own session already passed the check and holds
         * other writes of db: checking again would wait for its own hold.
         * A lost leadership shows at the commit. */
        return sendReply(c->fd, TPDB_OK, NULL);
    }
    int rc = tpdbNodeWriteCheck(c->s->node, db, errmsg);
    if (rc == TPDB_OK && !tpdbNodeKnows(c->s->node, db)) {
        /* Opened while this process was not serving yet (it was starting):
         * the open's adoption never reached the node, and a write would
         * send followers only the changed pages of a file they lack. */
        char path[PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/%s", c->s->dataDir, db);
        if (!tpdbFsmFileHoldsNoData(path)) {
            tpdbErrf(errmsg,
                     "%s holds data the cluster has not adopted yet (it was "
                     "opened while the node was starting): close and reopen "
                     "the database",
                     db);
            rc = TPDB_INVALID;
        }
    }
    if (rc == TPDB_OK && !c->held) {
        rc = tpdbNodeHoldWrites(c->s->node, db, 1);
        c->held = rc == TPDB_OK;
        snprintf(c->db, sizeof c->db, "%s", db);
    }
    return sendReply(c->fd, rc, errmsg);
}

static int serveCommit(struct localConn *c,
                       uint8_t *req,
                       uint8_t *body,
                       size_t bodyLen,
                       int *keep)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    struct tpdb_txn txn;
    if (!c->held || c->acked) {
        return -1; /* no write check passed, or one commit already did */
    }
    int rc = txnDecode(body, bodyLen, &txn, errmsg);
    if (rc != TPDB_OK) {
        return rc == TPDB_PROTO ? -1 : sendReply(c->fd, rc, errmsg);
    }
    int whole = req[0] == OP_COMMIT;
    int final = whole || req[1] != 0;
    rc = whole ? tpdbNodeCommit(c->s->node, c->db, &txn, errmsg)
               : tpdbNodeCommitPart(c->s->node, c->db, &txn, tpdbGet32(req + 4),
                                    final, errmsg);
    if (final && rc == TPDB_OK) {
        c->acked = 1;
        if (whole) {
            c->ackedTxn = txn;
            c->ackedReq = req;
            *keep = 1;
            txn.pages = NULL;
        }
    }
    tpdb_free(txn.pages);
    return sendReply(c->fd, rc, errmsg);
}

/* Runs one request; *keep is set when the request buffer now belongs to
 * the acknowledged transaction. Returns 0 to go on, -1 to end the stream. */
static int serveRequest(struct localConn *c,
                        uint8_t *req,
                        size_t len,
                        int *keep)
{
    char db[256];
    unsigned nameLen = tpdbGet16(req + 2);
    if (len < REQ_HDR - 4 + nameLen || nameLen == 0 || nameLen > 255 ||
        memchr(req + 8, '\0', nameLen) != NULL) {
        return -1;
    }
    memcpy(db, req + 8, nameLen);
    db[nameLen] = '\0';
    if (!tpdbDbNameValid(db)) {
        tpdbLog(TPDB_LOG_WARN, "local socket: database name '%s' refused", db);
        return -1;
    }
    switch (req[0]) {
        case OP_CHECK:
            return serveCheck(c, db);
        case OP_WAIT:
            tpdbNodeWaitWritable(c->s->node, db);
            return sendReply(c->fd, TPDB_OK, NULL);
        case OP_ADOPT:
            return serveAdopt(c, db);
        case OP_DONE:
            if (c->held && strcmp(db, c->db) == 0) {
                sessionEnd(c, req[1] != 0, 0);
            }
            return 0;
        case OP_COMMIT:
        case OP_PART:
            if (!c->held || strcmp(db, c->db) != 0) {
                return -1;
            }
            return serveCommit(c, req, req + 8 + nameLen, len - 8 - nameLen,
                               keep);
        default:
            return -1;
    }
}

/* Reads a request body of len bytes into a buffer that grows with what
 * arrives, so that a header claiming a large request costs nothing until
 * its bytes come. Returns the buffer (the caller frees it) or NULL if the
 * stream failed or memory ran out. */
static uint8_t *recvRequest(int fd, size_t len)
{
    size_t cap = len < RECV_STEP ? len : RECV_STEP;
    size_t have = 0;
    uint8_t *buf = tpdb_malloc(cap);
    while (buf != NULL && have < len) {
        if (have == cap) {
            size_t next = cap * 2 < len ? cap * 2 : len;
            uint8_t *grown = tpdb_realloc(buf, next);
            if (grown == NULL) {
                break;
            }
            buf = grown;
            cap = next;
        }
        if (recvAll(fd, buf + have, cap - have) != 0) {
            break;
        }
        have = cap;
    }
    if (buf != NULL && have < len) {
        tpdb_free(buf);
        buf = NULL;
    }
    return buf;
}

static void *connThread(void *arg)
{
    struct localConn *c = arg;
    uint8_t hdr[4];
    for (;;) {
        if (recvAll(c->fd, hdr, 4) != 0) {
            break;
        }
        size_t len = tpdbGet32(hdr);
        if (len < REQ_HDR - 4 || len > REQ_MAX) {
            break;
        }
        uint8_t *req = recvRequest(c->fd, len);
        if (req == NULL) {
            break;
        }
        int keep = 0;
        int rv = serveRequest(c, req, len, &keep);
        if (!keep) {
            tpdb_free(req);
        }
        if (rv != 0) {
            break;
        }
    }
    sessionEnd(c, 0, 1);
    shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_lock(&c->s->mutex);
    c->done = 1;
    pthread_mutex_unlock(&c->s->mutex);
    return NULL;
}

/* Joins and frees the streams whose thread ended (all with `all`). */
static void reapConns(struct tpdb_local_server *s, int all)
{
    pthread_mutex_lock(&s->mutex);
    struct localConn **pp = &s->conns;
    while (*pp != NULL) {
        struct localConn *c = *pp;
        if (!c->done && !all) {
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        pthread_mutex_unlock(&s->mutex);
        pthread_join(c->thread, NULL);
        close(c->fd);
        tpdb_free(c);
        pthread_mutex_lock(&s->mutex);
    }
    pthread_mutex_unlock(&s->mutex);
}

static int connCount(struct tpdb_local_server *s)
{
    int n = 0;
    pthread_mutex_lock(&s->mutex);
    for (struct localConn *c = s->conns; c != NULL; c = c->next) {
        n++;
    }
    pthread_mutex_unlock(&s->mutex);
    return n;
}

static void *acceptThread(void *arg)
{
    struct tpdb_local_server *s = arg;
    for (;;) {
        int fd = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
        pthread_mutex_lock(&s->mutex);
        int closing = s->closing;
        pthread_mutex_unlock(&s->mutex);
        if (closing) {
            if (fd >= 0) {
                close(fd);
            }
            break;
        }
        if (fd < 0) {
            if (errno != EINTR && errno != ECONNABORTED) {
                struct pollfd p = {s->fd, POLLIN, 0};
                poll(&p, 1, 100); /* EMFILE and the like: do not spin */
            }
            continue;
        }
        reapConns(s, 0);
        if (connCount(s) >= CONNS_MAX) {
            tpdbLog(TPDB_LOG_WARN,
                    "local socket: %d client streams are open, the most "
                    "served at once: one more refused",
                    CONNS_MAX);
            close(fd);
            continue;
        }
        struct localConn *c = tpdb_calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->s = s;
        c->fd = fd;
        /* closing is checked again under the lock that adds c, so that a
         * shutdown in between cannot miss c's socket (its thread would
         * then wait for the client forever, and so would the free). */
        pthread_mutex_lock(&s->mutex);
        if (s->closing) {
            pthread_mutex_unlock(&s->mutex);
            close(fd);
            tpdb_free(c);
            break;
        }
        if (pthread_create(&c->thread, NULL, connThread, c) != 0) {
            pthread_mutex_unlock(&s->mutex);
            close(fd);
            tpdb_free(c);
            continue;
        }
        c->next = s->conns;
        s->conns = c;
        pthread_mutex_unlock(&s->mutex);
    }
    return NULL;
}

int tpdbLocalServerStart(struct tpdb_node *n,
                         const char *meta_dir,
                         const char *data_dir,
                         struct tpdb_local_server **out,
                         char *errmsg)
{
    struct tpdb_local_server *s = tpdb_calloc(1, sizeof *s);
    int rc = TPDB_NOMEM;
    if (s == NULL) {
        tpdbErrf(errmsg, "local socket: out of memory");
        return rc;
    }
    s->node = n;
    s->fd = -1;
    snprintf(s->dataDir, sizeof s->dataDir, "%s", data_dir);
    pthread_mutex_init(&s->mutex, NULL);
    rc = sockAddress(meta_dir, &s->sa, errmsg);
    if (rc != TPDB_OK) {
        goto err;
    }
    rc = TPDB_IOERR;
    s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    /* The directory lock is ours: a socket file left is a dead node's. */
    unlink(s->sa.sun_path);
    if (s->fd < 0 ||
        bind(s->fd, (struct sockaddr *)&s->sa, sizeof s->sa) != 0 ||
        listen(s->fd, 64) != 0) {
        tpdbErrf(errmsg, "local socket %s: %s", s->sa.sun_path,
                 strerror(errno));
        goto err;
    }
    if (pthread_create(&s->thread, NULL, acceptThread, s) != 0) {
        tpdbErrf(errmsg, "local socket: cannot start its thread");
        unlink(s->sa.sun_path);
        goto err;
    }
    *out = s;
    return TPDB_OK;
err:
    if (s->fd >= 0) {
        close(s->fd);
    }
    pthread_mutex_destroy(&s->mutex);
    tpdb_free(s);
    return rc;
}

void tpdbLocalServerShutdown(struct tpdb_local_server *s)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&s->mutex);
    s->closing = 1;
    for (struct localConn *c = s->conns; c != NULL; c = c->next) {
        shutdown(c->fd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&s->mutex);
    unlink(s->sa.sun_path);
    shutdown(s->fd, SHUT_RDWR); /* wakes accept (Linux) */
}

void tpdbLocalServerFree(struct tpdb_local_server *s)
{
    if (s == NULL) {
        return;
    }
    pthread_join(s->thread, NULL);
    reapConns(s, 1);
    close(s->fd);
    pthread_mutex_destroy(&s->mutex);
    tpdb_free(s);
}

/* ---- client ---- */

struct tpdb_local_client {
    int fd;
    int broken;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

int tpdbLocalConnect(const char *meta_dir,
                     struct tpdb_local_client **out,
                     char *errmsg)
{
    struct sockaddr_un sa;
    int rc = sockAddress(meta_dir, &sa, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    struct tpdb_local_client *c = tpdb_calloc(1, sizeof *c);
    if (c == NULL) {
        tpdbErrf(errmsg, "local socket: out of memory");
        return TPDB_NOMEM;
    }
    snprintf(c->path, sizeof c->path, "%s", sa.sun_path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        tpdbErrf(errmsg, "connect %s: %s", sa.sun_path, strerror(e));
        if (c->fd >= 0) {
            close(c->fd);
        }
        tpdb_free(c);
        return e == ENOENT || e == ECONNREFUSED ? TPDB_NOTFOUND : TPDB_IOERR;
    }
    *out = c;
    return TPDB_OK;
}

void tpdbLocalClose(struct tpdb_local_client *c)
{
    if (c != NULL) {
        close(c->fd);
        tpdb_free(c);
    }
}

int tpdbLocalBroken(const struct tpdb_local_client *c)
{
    return c->broken;
}

static void gone(struct tpdb_local_client *c, const char *what, char *errmsg)
{
    int e = errno;
    c->broken = 1;
    tpdbErrf(errmsg,
             "the process running this directory's node went away (%s %s: "
             "%s); close and reopen the database to run the node here",
             what, c->path, strerror(e));
}

/* Reads a reply: its code, the message into errmsg. -1 if the stream
 * failed (errno). */
static int readReply(struct tpdb_local_client *c, int *rc, char *errmsg)
{
    uint8_t hdr[8];
    if (recvAll(c->fd, hdr, 4) != 0) {
        return -1;
    }
    size_t len = tpdbGet32(hdr);
    if (len < 4 || len > TPDB_ERRMSG_SIZE + 3) {
        errno = EPROTO;
        return -1;
    }
    if (recvAll(c->fd, hdr + 4, 4) != 0) {
        return -1;
    }
    char msg[TPDB_ERRMSG_SIZE];
    if (recvAll(c->fd, msg, len - 4) != 0) {
        return -1;
    }
    msg[len - 4] = '\0';
    *rc = (int)tpdbGet32(hdr + 4);
    if (errmsg != NULL) {
        tpdbErrf(errmsg, "%s", msg);
    }
    return 0;
}

static void reqHeader(uint8_t *hdr,
                      size_t bodyLen,
                      int op,
                      int flag,
                      unsigned index,
                      size_t nameLen)
{
    tpdbPut32(hdr, (uint32_t)(REQ_HDR - 4 + nameLen + bodyLen));
    hdr[4] = (uint8_t)op;
    hdr[5] = (uint8_t)flag;
    tpdbPut16(hdr + 6, (uint16_t)nameLen);
    tpdbPut32(hdr + 8, index);
}

/* A request without a body, and its reply unless op is DONE. */
static int simpleRequest(struct tpdb_local_client *c,
                         int op,
                         int flag,
                         const char *db,
                         char *errmsg)
{
    uint8_t hdr[REQ_HDR];
    size_t nameLen = strlen(db);
    int rc = TPDB_OK;
    if (c->broken) {
        errno = EPIPE;
        gone(c, "send to", errmsg);
        return TPDB_READONLY;
    }
    reqHeader(hdr, 0, op, flag, 0, nameLen);
    struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)db, nameLen}};
    if (sendAll(c->fd, iov, 2) != 0) {
        gone(c, "send to", errmsg);
        return TPDB_READONLY;
    }
    if (op != OP_DONE && readReply(c, &rc, errmsg) != 0) {
        gone(c, "read from", errmsg);
        return TPDB_READONLY;
    }
    return rc;
}

int tpdbLocalAdopt(struct tpdb_local_client *c, const char *db, char *errmsg)
{
    return simpleRequest(c, OP_ADOPT, 0, db, errmsg);
}

int tpdbLocalWriteCheck(struct tpdb_local_client *c,
                        const char *db,
                        char *errmsg)
{
    return simpleRequest(c, OP_CHECK, 0, db, errmsg);
}

void tpdbLocalWaitWritable(struct tpdb_local_client *c, const char *db)
{
    simpleRequest(c, OP_WAIT, 0, db, NULL);
}

void tpdbLocalWriteDone(struct tpdb_local_client *c,
                        const char *db,
                        int written)
{
    simpleRequest(c, OP_DONE, written != 0, db, NULL);
}

int tpdbLocalCommit(struct tpdb_local_client *c,
                    const char *db,
                    const struct tpdb_txn *txn,
                    int whole,
                    unsigned index,
                    int final,
                    char *errmsg)
{
    size_t nameLen = strlen(db);
    size_t body = TXN_HDR + (size_t)txn->n_pages * (4 + txn->page_size);
    uint8_t hdr[REQ_HDR + TXN_HDR];
    int n = 0;
    int rc = TPDB_OK;
    if (c->broken) {
        errno = EPIPE;
        gone(c, "send to", errmsg);
        return TPDB_RAFT;
    }
    struct iovec *iov = tpdb_calloc(3 + 2 * (size_t)txn->n_pages, sizeof *iov);
    uint8_t *pgnos = tpdb_malloc(4 * (size_t)txn->n_pages + 1);
    if (iov == NULL || pgnos == NULL) {
        tpdb_free(iov);
        tpdb_free(pgnos);
        tpdbErrf(errmsg, "commit through the local node: out of memory");
        return TPDB_NOMEM;
    }
    reqHeader(hdr, body, whole ? OP_COMMIT : OP_PART, final, index, nameLen);
    tpdbPut32(hdr + REQ_HDR, txn->page_size);
    tpdbPut32(hdr + REQ_HDR + 4, txn->db_pages);
    tpdbPut32(hdr + REQ_HDR + 8, txn->n_pages);
    iov[n++] = (struct iovec){hdr, REQ_HDR};
    iov[n++] = (struct iovec){(void *)db, nameLen};
    iov[n++] = (struct iovec){hdr + REQ_HDR, TXN_HDR};
    for (uint32_t i = 0; i < txn->n_pages; i++) {
        tpdbPut32(pgnos + 4 * i, txn->pages[i].pgno);
        iov[n++] = (struct iovec){pgnos + 4 * i, 4};
        iov[n++] = (struct iovec){(void *)txn->pages[i].data, txn->page_size};
    }
    if (sendAll(c->fd, iov, n) != 0) {
        /* The node acts only on a whole request. */
        gone(c, "send to", errmsg);
        tpdbErrWrap(errmsg, "not committed");
        rc = TPDB_RAFT;
    } else if (readReply(c, &rc, errmsg) != 0) {
        gone(c, "read from", errmsg);
        if (final) {
            tpdbErrWrap(errmsg,
                        "outcome unknown (the node had the "
                        "transaction and may have committed it)");
            rc = TPDB_UNKNOWN;
        } else {
            tpdbErrWrap(errmsg,
                        "part %u of a large transaction: not "
                        "committed",
                        index);
            rc = TPDB_RAFT;
        }
    }
    tpdb_free(iov);
    tpdb_free(pgnos);
    return rc;
}
