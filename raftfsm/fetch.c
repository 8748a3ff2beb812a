/*
 * Catch-up streams between nodes (see fetch.h): the client thread that
 * fetches databases the state machine waits for, and the threads that
 * serve them to peers. Blocking sockets with timeouts; every length read
 * from the wire is checked before use.
 */
#include "raftfsm/fetch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "raftfsm/chan.h"
#include "raftfsm/entry.h"
#include "raftfsm/fsm.h"
#include "raftfsm/transport.h"

#define FETCH_SERVERS 4
#define FETCH_IO_TIMEOUT_MS 10000
#define FETCH_CHUNK_BYTES (256 * 1024)
#define FETCH_SERVE_WAIT_MS 10000
#define FETCH_FINISH_WAIT_MS 30000
#define FETCH_BACKOFF_MIN_MS 100
#define FETCH_BACKOFF_MAX_MS 2000
#define FETCH_PEERS_MAX 16
#define FETCH_MSG_MAX 1024

struct fetchJob {
    char db[TPDB_DBNAME_MAX + 1];
    uint64_t min;
    struct fetchJob *next;
};

struct fetchServer {
    struct tpdb_fetch *f;
    int sealed;
    struct tpdb_seal_session session; /* handed to the thread */
    pthread_t thread;
    int fd;   /* -1 when the slot is free */
    int done; /* the thread finished; join it */
};

struct tpdb_fetch {
    struct raft_fsm *fsm;
    const struct tpdb_seal_keys *keys; /* borrowed; NULL: plain */
    uint64_t id;
    char address[TPDB_ADDRESS_MAX];
    tpdb_fetch_peers_fn peers;
    tpdb_fetch_index_fn index;
    void *peersArg;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int stop;
    struct fetchJob *jobs; /* (mutex) */
    int clientStarted;
    pthread_t client;
    int clientFd; /* (mutex) socket of the stream being received */
    struct fetchServer servers[FETCH_SERVERS]; /* (mutex) */
};

/* Blocking socket with send and receive timeouts. */
static void setBlocking(int fd)
{
    struct timeval tv = {FETCH_IO_TIMEOUT_MS / 1000, 0};
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) {
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* ---- serving ---------------------------------------------------------- */

static void sendError(struct tpdb_chan *ch, int rc, const char *msg)
{
    uint8_t hdr[6];
    size_t len = strnlen(msg, FETCH_MSG_MAX);
    tpdbPut32(hdr, (uint32_t)(rc != TPDB_OK ? rc : TPDB_IOERR));
    tpdbPut16(hdr + 4, (uint16_t)len);
    if (tpdbChanWrite(ch, hdr, sizeof hdr) == TPDB_OK) {
        tpdbChanWrite(ch, msg, len);
    }
}

/* Reads the request: database name and minimum index. */
static int readRequest(struct tpdb_chan *ch,
                       char *db,
                       uint64_t *min,
                       char *errmsg)
{
    uint8_t b[8];
    if (tpdbChanRead(ch, b, 2) != TPDB_OK) {
        tpdbErrf(errmsg, "fetch request: truncated");
        return TPDB_PROTO;
    }
    size_t n = tpdbGet16(b);
    if (n == 0) {
        db[0] = '\0'; /* an index query */
        return tpdbChanRead(ch, b, 8) == TPDB_OK ? TPDB_OK : TPDB_PROTO;
    }
    if (n > TPDB_DBNAME_MAX || tpdbChanRead(ch, db, n) != TPDB_OK ||
        tpdbChanRead(ch, b, 8) != TPDB_OK || memchr(db, '\0', n) != NULL) {
        tpdbErrf(errmsg, "fetch request: bad name");
        return TPDB_PROTO;
    }
    db[n] = '\0';
    *min = tpdbGet64(b);
    return TPDB_OK;
}

/* Streams the pinned state: header, chunks, end, page count. */
static int sendPages(struct tpdb_chan *ch,
                     struct tpdb_fsm_serve *sv,
                     char *errmsg)
{
    uint32_t ps = 0, pages = 0;
    uint64_t served = 0;
    uint8_t hdr[20];
    tpdbFsmServeInfo(sv, &ps, &pages, &served);
    tpdbPut32(hdr, 0);
    tpdbPut32(hdr + 4, ps);
    tpdbPut32(hdr + 8, pages);
    tpdbPut64(hdr + 12, served);
    int rc = tpdbChanWrite(ch, hdr, sizeof hdr);
    uint32_t per = FETCH_CHUNK_BYTES / ps ? FETCH_CHUNK_BYTES / ps : 1;
    uint8_t *buf = tpdb_malloc(8 + (size_t)per * ps);
    if (buf == NULL) {
        return TPDB_NOMEM;
    }
    for (uint32_t p = 1; rc == TPDB_OK && p <= pages; p += per) {
        uint32_t n = pages - p + 1 < per ? pages - p + 1 : per;
        rc = tpdbFsmServeRead(sv, p, n, buf + 8, errmsg);
        if (rc == TPDB_OK) {
            tpdbPut32(buf, n);
            tpdbPut32(buf + 4, tpdbCrc32c(0, buf + 8, (size_t)n * ps));
            rc = tpdbChanWrite(ch, buf, 8 + (size_t)n * ps);
        }
    }
    if (rc == TPDB_OK) {
        tpdbPut32(buf, 0);
        tpdbPut32(buf + 4, 0);
        tpdbPut32(buf + 8, pages);
        rc = tpdbChanWrite(ch, buf, 12);
    }
    tpdb_free(buf);
    return rc;
}

static void serveStream(struct tpdb_fetch *f, struct fetchServer *srv)
{
    struct tpdb_chan chan;
    struct tpdb_chan *ch = &chan;
    int fd = srv->fd;
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    char db[TPDB_DBNAME_MAX + 1];
    uint64_t min = 0;
    struct tpdb_fsm_serve *sv = NULL;
    setBlocking(fd);
    tpdbChanInit(ch, fd, srv->sealed ? &srv->session : NULL);
    sodium_memzero(&srv->session, sizeof srv->session);
    int rc = readRequest(ch, db, &min, errmsg);
    if (rc == TPDB_OK && db[0] == '\0') {
        uint8_t r[13];
        int leads = 0;
        uint64_t commit = 0;
        f->index(f->peersArg, &leads, &commit);
        tpdbPut32(r, 0);
        r[4] = (uint8_t)leads;
        tpdbPut64(r + 5, commit);
        tpdbChanWrite(ch, r, sizeof r);
        tpdbChanClose(ch);
        return;
    }
    if (rc == TPDB_OK) {
        rc =
            tpdbFsmServeOpen(f->fsm, db, min, FETCH_SERVE_WAIT_MS, &sv, errmsg);
        if (rc != TPDB_OK) {
            sendError(ch, rc, errmsg);
        }
    }
    if (rc == TPDB_OK) {
        rc = sendPages(ch, sv, errmsg);
    }
    tpdbFsmServeClose(sv);
    tpdbChanClose(ch);
    if (rc != TPDB_OK) {
        tpdbLog(TPDB_LOG_WARN, "serve %s: %s", db,
                errmsg[0] ? errmsg : tpdb_strerror(rc));
    }
}

static void *serverThread(void *arg)
{
    struct fetchServer *srv = arg;
    struct tpdb_fetch *f = srv->f;
    serveStream(f, srv);
    pthread_mutex_lock(&f->mutex);
    close(srv->fd);
    srv->fd = -1;
    srv->done = 1;
    pthread_mutex_unlock(&f->mutex);
    return NULL;
}

/* Joins server threads that finished. Mutex held. */
static void reapServers(struct tpdb_fetch *f)
{
    for (int i = 0; i < FETCH_SERVERS; i++) {
        if (f->servers[i].done) {
            pthread_join(f->servers[i].thread, NULL);
            f->servers[i].done = 0;
        }
    }
}

void tpdbFetchServe(void *fetch,
                    int fd,
                    uint64_t id,
                    const struct tpdb_seal_session *session)
{
    struct tpdb_fetch *f = fetch;
    struct fetchServer *slot = NULL;
    pthread_mutex_lock(&f->mutex);
    reapServers(f);
    for (int i = 0; i < FETCH_SERVERS && slot == NULL && !f->stop; i++) {
        if (f->servers[i].fd < 0) {
            slot = &f->servers[i];
        }
    }
    if (slot != NULL) {
        slot->fd = fd;
        slot->sealed = session != NULL;
        if (session != NULL) {
            slot->session = *session;
        }
        if (pthread_create(&slot->thread, NULL, serverThread, slot) != 0) {
            slot->fd = -1;
            slot = NULL;
        }
    }
    pthread_mutex_unlock(&f->mutex);
    if (slot == NULL) {
        tpdbLog(TPDB_LOG_WARN, "fetch from node %llu refused: busy",
                (unsigned long long)id);
        close(fd);
    }
}

/* ---- fetching --------------------------------------------------------- */

static int connectTo(const char *address, char *errmsg)
{
    struct sockaddr_in sa;
    if (tpdbTransportParseAddress(address, &sa) != TPDB_OK) {
        tpdbErrf(errmsg, "bad peer address %s", address);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        tpdbErrf(errmsg, "socket: %s", strerror(errno));
        return -1;
    }
    setBlocking(fd);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        tpdbErrf(errmsg, "connect %s: %s", address, strerror(errno));
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* job NULL: an index query. */
static int sendRequest(struct tpdb_chan *ch, const struct fetchJob *job)
{
    uint8_t buf[2 + TPDB_DBNAME_MAX + 8];
    size_t len = job != NULL ? strlen(job->db) : 0;
    tpdbPut16(buf, (uint16_t)len);
    memcpy(buf + 2, job != NULL ? job->db : "", len);
    tpdbPut64(buf + 2 + len, job != NULL ? job->min : 0);
    return tpdbChanWrite(ch, buf, 2 + len + 8);
}

/* Reads the response header; on a refusal, its message into errmsg. */
static int readHeader(struct tpdb_chan *ch,
                      uint32_t *ps,
                      uint32_t *pages,
                      uint64_t *served,
                      char *errmsg)
{
    uint8_t h[16];
    if (tpdbChanRead(ch, h, 4) != TPDB_OK) {
        tpdbErrf(errmsg, "no response");
        return TPDB_IOERR;
    }
    uint32_t status = tpdbGet32(h);
    if (status != 0) {
        char msg[FETCH_MSG_MAX + 1] = "";
        size_t len = 0;
        if (tpdbChanRead(ch, h, 2) == TPDB_OK) {
            len = tpdbGet16(h);
            len = len > FETCH_MSG_MAX ? FETCH_MSG_MAX : len;
            if (tpdbChanRead(ch, msg, len) != TPDB_OK) {
                len = 0;
            }
        }
        msg[len] = '\0';
        tpdbErrf(errmsg, "refused: %s", msg);
        return status == TPDB_BUSY ? TPDB_BUSY : TPDB_IOERR;
    }
    if (tpdbChanRead(ch, h, 16) != TPDB_OK) {
        tpdbErrf(errmsg, "truncated response header");
        return TPDB_PROTO;
    }
    *ps = tpdbGet32(h);
    *pages = tpdbGet32(h + 4);
    *served = tpdbGet64(h + 8);
    if (*ps < 512 || *ps > 65536 || (*ps & (*ps - 1)) != 0 || *pages == 0) {
        tpdbErrf(errmsg, "page size %u or size %u pages refused", *ps, *pages);
        return TPDB_PROTO;
    }
    return TPDB_OK;
}

/* Receives the chunks into ff. */
static int readPages(struct tpdb_chan *ch,
                     struct tpdb_fsm_fetch *ff,
                     uint32_t ps,
                     uint32_t pages,
                     char *errmsg)
{
    uint32_t per = FETCH_CHUNK_BYTES / ps ? FETCH_CHUNK_BYTES / ps : 1;
    uint8_t *buf = tpdb_malloc((size_t)per * ps);
    uint32_t next = 1;
    int rc = buf != NULL ? TPDB_OK : TPDB_NOMEM;
    while (rc == TPDB_OK) {
        uint8_t h[8];
        rc = tpdbChanRead(ch, h, 8);
        uint32_t n = tpdbGet32(h);
        if (rc != TPDB_OK || n == 0) {
            break;
        }
        if (n > per || (uint64_t)next + n - 1 > pages) {
            tpdbErrf(errmsg, "chunk of %u pages at %u refused", n, next);
            rc = TPDB_PROTO;
            break;
        }
        rc = tpdbChanRead(ch, buf, (size_t)n * ps);
        if (rc == TPDB_OK &&
            tpdbCrc32c(0, buf, (size_t)n * ps) != tpdbGet32(h + 4)) {
            tpdbErrf(errmsg, "chunk at page %u: checksum mismatch", next);
            rc = TPDB_CORRUPT;
        }
        if (rc == TPDB_OK) {
            rc = tpdbFsmFetchPages(ff, next, n, buf, errmsg);
            next += n;
        }
    }
    uint8_t t[4];
    if (rc == TPDB_OK && (tpdbChanRead(ch, t, 4) != TPDB_OK ||
                          tpdbGet32(t) != pages || next != pages + 1)) {
        tpdbErrf(errmsg, "stream ended after %u of %u pages", next - 1, pages);
        rc = TPDB_PROTO;
    }
    tpdb_free(buf);
    return rc;
}

static int waitStop(struct tpdb_fetch *f, unsigned ms)
{
    pthread_mutex_lock(&f->mutex);
    if (!f->stop) {
        tpdbCondWaitMs(&f->cond, &f->mutex, ms);
    }
    int stop = f->stop;
    pthread_mutex_unlock(&f->mutex);
    return stop;
}

/* Commits once the entries up to the served index have arrived. */
static int finish(struct tpdb_fetch *f,
                  struct tpdb_fsm_fetch *ff,
                  uint32_t pages,
                  char *errmsg)
{
    uint64_t deadline = tpdbNowMs() + FETCH_FINISH_WAIT_MS;
    int rc;
    while ((rc = tpdbFsmFetchFinish(ff, pages, errmsg)) == TPDB_BUSY) {
        if (tpdbNowMs() >= deadline || waitStop(f, 20)) {
            tpdbFsmFetchAbort(ff);
            tpdbErrf(errmsg, "entries up to the served index did not come");
            return TPDB_TIMEOUT;
        }
    }
    return rc;
}

/* One attempt from the peer at `address`. */
static int fetchFrom(struct tpdb_fetch *f,
                     const struct fetchJob *job,
                     const char *address,
                     char *errmsg)
{
    uint32_t ps = 0, pages = 0;
    uint64_t served = 0;
    struct tpdb_fsm_fetch *ff = NULL;
    int fd = connectTo(address, errmsg);
    if (fd < 0) {
        return TPDB_IOERR;
    }
    pthread_mutex_lock(&f->mutex);
    f->clientFd = fd;
    pthread_mutex_unlock(&f->mutex);
    struct tpdb_chan ch;
    int rc = tpdbChanConnect(&ch, fd, f->keys, TPDB_HANDSHAKE_FETCH, f->id,
                             f->address, errmsg);
    if (rc == TPDB_OK) {
        rc = sendRequest(&ch, job);
    }
    if (rc == TPDB_OK) {
        rc = readHeader(&ch, &ps, &pages, &served, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = tpdbFsmFetchBegin(f->fsm, job->db, ps, served, 5000, &ff, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = readPages(&ch, ff, ps, pages, errmsg);
        if (rc != TPDB_OK) {
            tpdbFsmFetchAbort(ff);
        }
    }
    pthread_mutex_lock(&f->mutex);
    f->clientFd = -1;
    pthread_mutex_unlock(&f->mutex);
    tpdbChanClose(&ch);
    close(fd);
    if (rc == TPDB_OK) {
        rc = finish(f, ff, pages, errmsg);
    }
    return rc;
}

/* Tries every peer once; TPDB_OK when the database is in. */
static int fetchOnce(struct tpdb_fetch *f, const struct fetchJob *job)
{
    char addrs[FETCH_PEERS_MAX][TPDB_ADDRESS_MAX];
    char errmsg[TPDB_ERRMSG_SIZE] = "no peer to fetch from";
    uint64_t min = 0;
    if (!tpdbFsmFetchNeeded(f->fsm, job->db, &min)) {
        return TPDB_OK; /* done meanwhile (or superseded) */
    }
    unsigned n = f->peers(f->peersArg, addrs, FETCH_PEERS_MAX);
    int rc = TPDB_NOTFOUND;
    for (unsigned i = 0; i < n && rc != TPDB_OK && !waitStop(f, 0); i++) {
        rc = fetchFrom(f, job, addrs[i], errmsg);
        if (rc != TPDB_OK) {
            tpdbLog(TPDB_LOG_WARN, "fetch %s from %s: %s", job->db, addrs[i],
                    errmsg);
        }
    }
    if (n == 0) {
        tpdbLog(TPDB_LOG_DEBUG, "fetch %s: %s", job->db, errmsg);
    }
    return rc;
}

static void *clientThread(void *arg)
{
    struct tpdb_fetch *f = arg;
    unsigned backoff = FETCH_BACKOFF_MIN_MS;
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, NULL);
    pthread_mutex_lock(&f->mutex);
    while (!f->stop) {
        struct fetchJob *job = f->jobs;
        if (job == NULL) {
            pthread_cond_wait(&f->cond, &f->mutex);
            continue;
        }
        pthread_mutex_unlock(&f->mutex);
        int rc = fetchOnce(f, job);
        pthread_mutex_lock(&f->mutex);
        if (rc == TPDB_OK) {
            f->jobs = job->next;
            tpdb_free(job);
            backoff = FETCH_BACKOFF_MIN_MS;
        } else if (!f->stop) {
            tpdbCondWaitMs(&f->cond, &f->mutex, backoff);
            backoff = backoff * 2 > FETCH_BACKOFF_MAX_MS ? FETCH_BACKOFF_MAX_MS
                                                         : backoff * 2;
        }
    }
    pthread_mutex_unlock(&f->mutex);
    return NULL;
}

/* One index query to the peer at address: TPDB_OK with *index if it
 * leads. */
static int askIndex(struct tpdb_fetch *f,
                    const char *address,
                    uint64_t *index,
                    char *errmsg)
{
    uint8_t r[13];
    struct tpdb_chan ch;
    int fd = connectTo(address, errmsg);
    if (fd < 0) {
        return TPDB_IOERR;
    }
    int rc = tpdbChanConnect(&ch, fd, f->keys, TPDB_HANDSHAKE_FETCH, f->id,
                             f->address, errmsg);
    if (rc == TPDB_OK) {
        rc = sendRequest(&ch, NULL);
        if (rc == TPDB_OK) {
            rc = tpdbChanRead(&ch, r, sizeof r);
        }
        tpdbChanClose(&ch);
    }
    close(fd);
    if (rc != TPDB_OK || tpdbGet32(r) != 0) {
        tpdbErrf(errmsg, "index query to %s: no answer", address);
        return TPDB_IOERR;
    }
    if (r[4] != 1) {
        tpdbErrf(errmsg, "%s does not lead", address);
        return TPDB_NOTFOUND;
    }
    *index = tpdbGet64(r + 5);
    return TPDB_OK;
}

int tpdbFetchLeaderIndex(struct tpdb_fetch *f, uint64_t *index, char *errmsg)
{
    char addrs[FETCH_PEERS_MAX][TPDB_ADDRESS_MAX];
    unsigned n = f->peers(f->peersArg, addrs, FETCH_PEERS_MAX);
    tpdbErrf(errmsg, "no peer known");
    for (unsigned i = 0; i < n; i++) {
        if (askIndex(f, addrs[i], index, errmsg) == TPDB_OK) {
            return TPDB_OK;
        }
    }
    return TPDB_NOTFOUND;
}

void tpdbFetchStart(void *fetch, const char *db, uint64_t min_index)
{
    struct tpdb_fetch *f = fetch;
    struct fetchJob *job = tpdb_calloc(1, sizeof *job);
    if (job == NULL) {
        tpdbLog(TPDB_LOG_ERROR, "fetch %s: out of memory", db);
        return;
    }
    snprintf(job->db, sizeof job->db, "%s", db);
    job->min = min_index;
    pthread_mutex_lock(&f->mutex);
    struct fetchJob **tail = &f->jobs;
    while (*tail != NULL && strcmp((*tail)->db, db) != 0) {
        tail = &(*tail)->next;
    }
    if (*tail != NULL) {
        /* Already queued: the newer minimum wins. */
        (*tail)->min = min_index;
        tpdb_free(job);
    } else {
        *tail = job;
    }
    if (!f->clientStarted && !f->stop &&
        pthread_create(&f->client, NULL, clientThread, f) == 0) {
        f->clientStarted = 1;
    }
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->mutex);
}

int tpdbFetchInit(struct tpdb_fetch **out,
                  struct raft_fsm *fsm,
                  uint64_t id,
                  const char *address,
                  tpdb_fetch_peers_fn peers,
                  tpdb_fetch_index_fn index,
                  void *peers_arg,
                  char *errmsg)
{
    struct tpdb_fetch *f = tpdb_calloc(1, sizeof *f);
    if (f == NULL) {
        tpdbErrf(errmsg, "fetch: out of memory");
        return TPDB_NOMEM;
    }
    f->fsm = fsm;
    f->id = id;
    snprintf(f->address, sizeof f->address, "%s", address);
    f->peers = peers;
    f->index = index;
    f->peersArg = peers_arg;
    f->clientFd = -1;
    for (int i = 0; i < FETCH_SERVERS; i++) {
        f->servers[i].f = f;
        f->servers[i].fd = -1;
    }
    pthread_mutex_init(&f->mutex, NULL);
    pthread_cond_init(&f->cond, NULL);
    *out = f;
    return TPDB_OK;
}

void tpdbFetchSetKeys(struct tpdb_fetch *f, const struct tpdb_seal_keys *keys)
{
    f->keys = keys;
}

void tpdbFetchClose(struct tpdb_fetch *f)
{
    if (f == NULL) {
        return;
    }
    pthread_mutex_lock(&f->mutex);
    f->stop = 1;
    /* Wake blocking reads and writes at once. */
    if (f->clientFd >= 0) {
        shutdown(f->clientFd, SHUT_RDWR);
    }
    for (int i = 0; i < FETCH_SERVERS; i++) {
        if (f->servers[i].fd >= 0) {
            shutdown(f->servers[i].fd, SHUT_RDWR);
        }
    }
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->mutex);
    if (f->clientStarted) {
        pthread_join(f->client, NULL);
    }
    for (int i = 0; i < FETCH_SERVERS; i++) {
        pthread_mutex_lock(&f->mutex);
        int busy = f->servers[i].fd >= 0 || f->servers[i].done;
        pthread_mutex_unlock(&f->mutex);
        if (busy) {
            pthread_join(f->servers[i].thread, NULL);
        }
    }
    while (f->jobs != NULL) {
        struct fetchJob *job = f->jobs;
        f->jobs = job->next;
        tpdb_free(job);
    }
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->mutex);
    tpdb_free(f);
}
