/*
 * tpdbd's client listener (tpdbd_server.h). The accepting thread polls the
 * listening socket and the wake-up pipe; every connection gets a detached
 * thread that reads lines into a buffer growing up to TPDBD_LINE_MAX and
 * answers each with tpdbdHandle(). The server keeps every connection's fd
 * so that shutdown can stop their reads (shutdown(SHUT_RD)) while the
 * request in progress still gets its reply.
 */
#include "shell/tpdbd_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "shell/tpdbd_api.h"
#include "shell/tpdbd_log.h"
#include "shell/tpdbd_txn.h"

#define DRAIN_MAX (16u * 1024 * 1024)
#define TXN_TICK_MS 500

struct tpdbd_server {
    struct tpdbd *d;
    int fd;
    pthread_mutex_t mutex;
    pthread_cond_t cond; /* signalled when a connection ends */
    unsigned active;
    int stopping;
    int *fds; /* d->cfg.max_clients slots, -1 when free */
};

struct client {
    struct tpdbd_server *s;
    int fd;
    unsigned slot;
};

static int listenOn(const char *addr, char *err, size_t size)
{
    struct sockaddr_in sin;
    char host[INET_ADDRSTRLEN];
    const char *colon = strrchr(addr, ':');
    int one = 1;
    snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)atoi(colon + 1));
    inet_pton(AF_INET, host, &sin.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
        listen(fd, 128) != 0) {
        snprintf(err, size, "client listener on %s: %s", addr, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

int tpdbdServerInit(struct tpdbd_server **out,
                    struct tpdbd *d,
                    char *err,
                    size_t size)
{
    struct tpdbd_server *s = calloc(1, sizeof *s);
    if (s == NULL ||
        (s->fds = malloc(d->cfg.max_clients * sizeof *s->fds)) == NULL) {
        free(s);
        snprintf(err, size, "out of memory");
        return -1;
    }
    for (unsigned i = 0; i < d->cfg.max_clients; i++) {
        s->fds[i] = -1;
    }
    s->d = d;
    if ((s->fd = listenOn(d->cfg.client_listen, err, size)) < 0) {
        free(s->fds);
        free(s);
        return -1;
    }
    pthread_mutex_init(&s->mutex, NULL);
    pthread_cond_init(&s->cond, NULL);
    *out = s;
    return 0;
}

/* Sends line (len bytes) and a newline in one sendmsg(2) (more only if
 * the socket takes part of it): one segment per reply, not two. */
static int sendLine(int fd, const char *line, size_t len)
{
    static char nl[] = "\n";
    struct iovec iov[2] = {{(void *)line, len}, {nl, 1}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    while (msg.msg_iovlen > 0) {
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        while (msg.msg_iovlen > 0 && (size_t)n >= msg.msg_iov->iov_len) {
            n -= (ssize_t)msg.msg_iov->iov_len;
            msg.msg_iov++;
            msg.msg_iovlen--;
        }
        if (msg.msg_iovlen > 0) {
            msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + n;
            msg.msg_iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* Sends reply (consumed) plus newline; NULL means out of memory. */
static int sendReply(int fd, char *reply)
{
    static const char nomem[] = "{\"ok\":false,\"error\":\"out of memory\"}";
    int rc = reply != NULL ? sendLine(fd, reply, strlen(reply))
                           : sendLine(fd, nomem, sizeof nomem - 1);
    free(reply);
    return rc;
}

/* The sink of a connection: each streamed line goes out at once. */
static int sinkSend(void *arg, const char *line, size_t len)
{
    return sendLine(*(int *)arg, line, len);
}

/* Answers one line (its '\n' stripped, and a '\r' before it). Empty lines
 * get no reply, as TrashPandaDB's empty connections. Returns -1 if the
 * connection must close. */
static int answer(struct tpdbd *d,
                  struct tpdbd_session *sess,
                  int fd,
                  char *line,
                  size_t len)
{
    struct tpdbd_sink out = {.send = sinkSend, .arg = &fd};
    if (len > 0 && line[len - 1] == '\r') {
        len--;
    }
    if (len == 0) {
        return 0;
    }
    char *reply = tpdbdHandleSession(d, sess, &out, line, len);
    if (out.failed) {
        /* A stream broke midway: nothing more can follow it. */
        free(reply);
        return -1;
    }
    return sendReply(fd, reply);
}

/* Closing a socket with unread input resets the connection, and the
 * client may lose the error reply: end our side, then read the client's
 * remaining input (at most DRAIN_MAX bytes, one idle second) before the
 * caller closes. */
static void drain(int fd)
{
    static char sink[65536];
    struct timeval second = {1, 0};
    size_t total = 0;
    ssize_t n;
    shutdown(fd, SHUT_WR);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &second, sizeof second);
    while (total < DRAIN_MAX && ((n = recv(fd, sink, sizeof sink, 0)) > 0 ||
                                 (n < 0 && errno == EINTR))) {
        total += n > 0 ? (size_t)n : 0;
    }
}

struct lineBuf {
    char *base;
    size_t len, cap;
};

/* Answers every complete line in b and keeps the rest. Returns 0, or -1
 * if the connection must close (send failed, or a line is too long). */
static int answerLines(struct tpdbd *d,
                       struct tpdbd_session *sess,
                       int fd,
                       struct lineBuf *b)
{
    size_t start = 0;
    char *nl;
    while ((nl = memchr(b->base + start, '\n', b->len - start)) != NULL) {
        if (answer(d, sess, fd, b->base + start,
                   (size_t)(nl - b->base) - start) != 0) {
            return -1;
        }
        start = (size_t)(nl - b->base) + 1;
    }
    memmove(b->base, b->base + start, b->len - start);
    b->len -= start;
    if (b->len > TPDBD_LINE_MAX) {
        char msg[128];
        snprintf(msg, sizeof msg,
                 "request line longer than %d bytes: closing the connection",
                 TPDBD_LINE_MAX);
        sendReply(fd, tpdbdErrorReply(msg));
        drain(fd);
        return -1;
    }
    return 0;
}

/* Makes room to read into; returns -1 if out of memory. */
static int reserve(struct lineBuf *b)
{
    if (b->cap - b->len >= 4096) {
        return 0;
    }
    size_t cap = b->cap == 0 ? 16384 : b->cap * 2;
    char *p = realloc(b->base, cap);
    if (p == NULL) {
        return -1;
    }
    b->base = p;
    b->cap = cap;
    return 0;
}

/* Waits for input while a local transaction is open, looking at it every
 * TXN_TICK_MS: it is rolled back when its idle deadline passes or the node
 * stops leading. Returns at once without an open local transaction. */
static void awaitInput(struct tpdbd_session *sess, int fd)
{
    long long left;
    while ((left = tpdbdSessionIdleLeftMs(sess)) >= 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int rv = poll(&p, 1, left > TXN_TICK_MS ? TXN_TICK_MS : (int)left);
        if (rv > 0 || (rv < 0 && errno != EINTR)) {
            return;
        }
        if (rv == 0 && tpdbdSessionIdleLeftMs(sess) == 0) {
            tpdbdSessionExpire(sess);
        } else if (rv == 0) {
            tpdbdSessionCheckLeader(sess);
        }
    }
}

static void serve(struct tpdbd_server *s, int fd)
{
    struct lineBuf b = {NULL, 0, 0};
    struct timeval idle = {TPDBD_IDLE_MS / 1000, 0};
    struct tpdbd_session *sess = tpdbdSessionNew(s->d);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof idle);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &idle, sizeof idle);
    for (;;) {
        if (sess == NULL || reserve(&b) != 0) {
            sendReply(fd, NULL);
            break;
        }
        awaitInput(sess, fd);
        ssize_t n = recv(fd, b.base + b.len, b.cap - b.len, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n == 0 && b.len > 0 &&
            !__atomic_load_n(&s->stopping, __ATOMIC_SEQ_CST)) {
            /* A last request without newline, as `printf ... | nc`. */
            answer(s->d, sess, fd, b.base, b.len);
        }
        if (n <= 0) {
            if (n < 0 && errno == EAGAIN) {
                tpdbdLog(TPDBD_DEBUG, "client idle for %d ms: closed",
                         TPDBD_IDLE_MS);
            }
            break;
        }
        b.len += (size_t)n;
        if (answerLines(s->d, sess, fd, &b) != 0) {
            break;
        }
    }
    /* A transaction the client left open is rolled back here. */
    tpdbdSessionClose(sess);
    free(b.base);
}

static void *clientThread(void *arg)
{
    struct client *c = arg;
    struct tpdbd_server *s = c->s;
    serve(s, c->fd);
    pthread_mutex_lock(&s->mutex);
    s->fds[c->slot] = -1;
    close(c->fd);
    s->active--;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mutex);
    free(c);
    return NULL;
}

/* Hands fd to a new thread; returns -1 (fd still open) if it cannot. */
static int startClient(struct tpdbd_server *s, int fd)
{
    pthread_attr_t attr;
    pthread_t tid;
    struct client *c = calloc(1, sizeof *c);
    unsigned slot = 0;
    int rc = -1;
    pthread_mutex_lock(&s->mutex);
    while (slot < s->d->cfg.max_clients && s->fds[slot] >= 0) {
        slot++;
    }
    if (c != NULL && slot < s->d->cfg.max_clients) {
        *c = (struct client){.s = s, .fd = fd, .slot = slot};
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&tid, &attr, clientThread, c) == 0) {
            s->fds[slot] = fd;
            s->active++;
            rc = 0;
        }
        pthread_attr_destroy(&attr);
    }
    pthread_mutex_unlock(&s->mutex);
    if (rc != 0) {
        free(c);
    }
    return rc;
}

static void acceptOne(struct tpdbd_server *s)
{
    int fd = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
            tpdbdLog(TPDBD_WARN, "accept: %s", strerror(errno));
        }
        return;
    }
    if (startClient(s, fd) != 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "too many connections (at most %u)",
                 s->d->cfg.max_clients);
        sendReply(fd, tpdbdErrorReply(msg));
        close(fd);
    }
}

void tpdbdServerRun(struct tpdbd_server *s,
                    int wake_fd,
                    const sigset_t *wait_mask)
{
    for (;;) {
        struct pollfd p[2] = {{.fd = s->fd, .events = POLLIN},
                              {.fd = wake_fd, .events = POLLIN}};
        int rv = ppoll(p, 2, NULL, wait_mask);
        if (rv < 0 && errno != EINTR) {
            tpdbdLog(TPDBD_ERROR, "poll: %s", strerror(errno));
            return;
        }
        if (rv > 0 && p[1].revents != 0) {
            return;
        }
        if (rv > 0 && (p[0].revents & POLLIN)) {
            acceptOne(s);
        }
    }
}

int tpdbdServerClose(struct tpdbd_server *s, unsigned timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    close(s->fd);
    pthread_mutex_lock(&s->mutex);
    __atomic_store_n(&s->stopping, 1, __ATOMIC_SEQ_CST);
    for (unsigned i = 0; i < s->d->cfg.max_clients; i++) {
        if (s->fds[i] >= 0) {
            shutdown(s->fds[i], SHUT_RD);
        }
    }
    while (s->active > 0 &&
           pthread_cond_timedwait(&s->cond, &s->mutex, &until) == 0) {
    }
    int left = (int)s->active;
    pthread_mutex_unlock(&s->mutex);
    if (left == 0) {
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->mutex);
        free(s->fds);
        free(s);
    }
    return left;
}
