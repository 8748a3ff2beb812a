/*
 * A request forwarded to another node's client port (tpdbd_forward.h):
 * a non-blocking connect and poll(2) against one deadline. The pool of
 * kept connections is a stack of idle fds (the last used is reused first)
 * and a count of open ones, under one mutex; a thread that finds none
 * idle and the count at its bound waits on the pool's condition variable,
 * signalled whenever a connection comes back or is closed.
 */
#include "shell/tpdbd_forward.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "shell/tpdbd.h"

static long long nowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on fd until deadline; returns 1 if ready, 0 on
 * timeout, -1 on error. */
static int waitFd(int fd, short events, long long deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        long long left = deadline - nowMs();
        if (left <= 0) {
            return 0;
        }
        int rv = poll(&p, 1, (int)left);
        if (rv >= 0 || errno != EINTR) {
            return rv > 0 ? 1 : rv;
        }
    }
}

static int parseAddr(const char *addr, struct sockaddr_in *sin)
{
    char host[INET_ADDRSTRLEN];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= sizeof host) {
        return -1;
    }
    snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
    memset(sin, 0, sizeof *sin);
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)atoi(colon + 1));
    return inet_pton(AF_INET, host, &sin->sin_addr) == 1 ? 0 : -1;
}

static int connectTo(const char *addr,
                     long long deadline,
                     char *err,
                     size_t size)
{
    struct sockaddr_in sin;
    int fd, soerr = 0;
    socklen_t len = sizeof soerr;
    if (parseAddr(addr, &sin) != 0) {
        snprintf(err, size, "bad address %s", addr);
        return -1;
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, size, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0 &&
        errno != EINPROGRESS) {
        soerr = errno;
    } else if (waitFd(fd, POLLOUT, deadline) != 1) {
        soerr = ETIMEDOUT;
    } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) {
        soerr = errno;
    }
    if (soerr != 0) {
        snprintf(err, size, "connect %s: %s", addr, strerror(soerr));
        close(fd);
        return -1;
    }
    return fd;
}

static int sendAll(int fd, const char *buf, size_t len, long long deadline)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            return -1;
        } else if (waitFd(fd, POLLOUT, deadline) != 1) {
            return -1;
        }
    }
    return 0;
}

/* Reads up to the first newline; returns the line or NULL. */
static char *readLine(int fd, long long deadline, char *err, size_t size)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        if (waitFd(fd, POLLIN, deadline) != 1) {
            snprintf(err, size, "timed out");
            break;
        }
        ssize_t n = recv(fd, buf + len, cap - len, 0);
        if (n <= 0) {
            if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
                continue;
            }
            snprintf(err, size, "%s",
                     n == 0 ? "connection closed" : strerror(errno));
            break;
        }
        char *nl = memchr(buf + len, '\n', (size_t)n);
        len += (size_t)n;
        if (nl != NULL) {
            *nl = '\0';
            return buf;
        }
        if (len == cap) {
            char *bigger =
                cap < 64u * TPDBD_LINE_MAX ? realloc(buf, cap * 2) : NULL;
            if (bigger == NULL) {
                snprintf(err, size, "reply too long");
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    free(buf);
    return NULL;
}

int tpdbdForwardOpen(const char *addr,
                     unsigned timeout_ms,
                     char *err,
                     size_t size)
{
    char why[256] = "";
    int fd = connectTo(addr, nowMs() + timeout_ms, why, sizeof why);
    if (fd < 0) {
        snprintf(err, size, "%s", why);
    }
    return fd;
}

int tpdbdForwardCall(int fd,
                     const char *addr,
                     const char *line,
                     unsigned timeout_ms,
                     char **reply,
                     char *err,
                     size_t size)
{
    long long deadline = nowMs() + timeout_ms;
    char why[256] = "";
    size_t len = strlen(line);
    /* Line and newline in one send: the other side runs a line only once
     * it is whole (or at end of file). */
    char *buf = malloc(len + 2);
    if (buf == NULL) {
        snprintf(err, size, "out of memory");
        return TPDBD_FWD_NOT_SENT;
    }
    memcpy(buf, line, len);
    buf[len] = '\n';
    int sent = sendAll(fd, buf, len + 1, deadline);
    free(buf);
    if (sent != 0) {
        snprintf(err, size, "send to %s failed", addr);
        return TPDBD_FWD_NO_REPLY;
    }
    *reply = readLine(fd, deadline, why, sizeof why);
    if (*reply == NULL) {
        snprintf(err, size, "reading from %s: %s", addr, why);
        return TPDBD_FWD_NO_REPLY;
    }
    return 0;
}

int tpdbdForward(const char *addr,
                 const char *line,
                 unsigned timeout_ms,
                 char **reply,
                 char *err,
                 size_t size)
{
    long long start = nowMs();
    int fd = tpdbdForwardOpen(addr, timeout_ms, err, size);
    if (fd < 0) {
        return TPDBD_FWD_NOT_SENT;
    }
    long long used = nowMs() - start;
    unsigned left =
        used < (long long)timeout_ms ? timeout_ms - (unsigned)used : 1;
    int rc = tpdbdForwardCall(fd, addr, line, left, reply, err, size);
    close(fd);
    return rc;
}

struct tpdbd_fwd_pool {
    pthread_mutex_t mutex;
    pthread_cond_t cond; /* CLOCK_MONOTONIC; a connection came back */
    unsigned max, open;  /* open: idle and in use, to any address */
    unsigned nidle;
    int idle[TPDBD_FWD_KEPT_MAX];
    long long since[TPDBD_FWD_KEPT_MAX]; /* when idle[i] came back */
    char addr[TPDBD_ADDR_MAX];           /* of the idle connections */
};

static unsigned clampMax(unsigned max)
{
    return max < 1 ? 1 : max > TPDBD_FWD_KEPT_MAX ? TPDBD_FWD_KEPT_MAX : max;
}

int tpdbdForwardPoolInit(struct tpdbd_fwd_pool **out, unsigned max)
{
    pthread_condattr_t attr;
    struct tpdbd_fwd_pool *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return -1;
    }
    p->max = clampMax(max);
    pthread_mutex_init(&p->mutex, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cond, &attr);
    pthread_condattr_destroy(&attr);
    *out = p;
    return 0;
}

void tpdbdForwardPoolClose(struct tpdbd_fwd_pool *p)
{
    if (p == NULL) {
        return;
    }
    while (p->nidle > 0) {
        close(p->idle[--p->nidle]);
    }
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->mutex);
    free(p);
}

/* Whether an idle kept connection may carry a request: nothing to read
 * (a closed or reset peer makes it readable) and not idle too long. */
static int keptUsable(int fd, long long since)
{
    struct pollfd pf = {.fd = fd, .events = POLLIN | POLLRDHUP};
    return nowMs() - since < TPDBD_FWD_KEPT_IDLE_MS && poll(&pf, 1, 0) == 0;
}

/* Closes one connection of p (mutex held) and wakes a waiter. */
static void keptDrop(struct tpdbd_fwd_pool *p, int fd)
{
    close(fd);
    p->open--;
    pthread_cond_signal(&p->cond);
}

void tpdbdForwardPoolSetMax(struct tpdbd_fwd_pool *p, unsigned max)
{
    pthread_mutex_lock(&p->mutex);
    p->max = clampMax(max);
    while (p->nidle > 0 && p->open > p->max) {
        keptDrop(p, p->idle[--p->nidle]);
    }
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mutex);
}

/* A connection of p to addr: returns an idle one, or -2 for a slot of a
 * new one (the caller connects, or gives the slot back), or -1 with err
 * set if neither came before deadline. */
static int keptTake(struct tpdbd_fwd_pool *p,
                    const char *addr,
                    long long deadline,
                    char *err,
                    size_t size)
{
    int fd = -1;
    pthread_mutex_lock(&p->mutex);
    if (strcmp(p->addr, addr) != 0) {
        while (p->nidle > 0) {
            keptDrop(p, p->idle[--p->nidle]);
        }
        snprintf(p->addr, sizeof p->addr, "%s", addr);
    }
    for (;;) {
        while (fd < 0 && p->nidle > 0) {
            p->nidle--;
            fd = p->idle[p->nidle];
            if (!keptUsable(fd, p->since[p->nidle])) {
                keptDrop(p, fd);
                fd = -1;
            }
        }
        if (fd >= 0) {
            break;
        }
        if (p->open < p->max) {
            p->open++;
            fd = -2;
            break;
        }
        long long left = deadline - nowMs();
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += left / 1000;
        until.tv_nsec += (left % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        if (left <= 0 ||
            pthread_cond_timedwait(&p->cond, &p->mutex, &until) != 0) {
            snprintf(err, size,
                     "all %u forward connections to %s busy for too long",
                     p->max, addr);
            break;
        }
    }
    pthread_mutex_unlock(&p->mutex);
    return fd;
}

/* Hands fd back to p after a request to addr (ok: it got its reply). */
static void keptGive(struct tpdbd_fwd_pool *p, const char *addr, int fd, int ok)
{
    pthread_mutex_lock(&p->mutex);
    if (ok && strcmp(p->addr, addr) == 0 && p->open <= p->max) {
        p->since[p->nidle] = nowMs();
        p->idle[p->nidle++] = fd;
        pthread_cond_signal(&p->cond);
    } else {
        keptDrop(p, fd);
    }
    pthread_mutex_unlock(&p->mutex);
}

int tpdbdForwardKept(struct tpdbd_fwd_pool *p,
                     const char *addr,
                     const char *line,
                     unsigned timeout_ms,
                     char **reply,
                     char *err,
                     size_t size)
{
    long long deadline = nowMs() + timeout_ms;
    char why[256] = "";
    int fd = keptTake(p, addr, deadline, why, sizeof why);
    if (fd == -2) {
        fd = connectTo(addr, deadline, why, sizeof why);
        if (fd < 0) {
            pthread_mutex_lock(&p->mutex);
            p->open--;
            pthread_cond_signal(&p->cond);
            pthread_mutex_unlock(&p->mutex);
        }
    }
    if (fd < 0) {
        snprintf(err, size, "%s", why);
        return TPDBD_FWD_NOT_SENT;
    }
    long long left = deadline - nowMs();
    int rc = tpdbdForwardCall(fd, addr, line, left > 0 ? (unsigned)left : 1,
                              reply, err, size);
    keptGive(p, addr, fd, rc == 0);
    return rc;
}
