/*
 * A request forwarded to another node's client port (tpdbd_forward.h):
 * a non-blocking connect and poll(2) against one deadline.
 */
#include "shell/tpdbd_forward.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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
