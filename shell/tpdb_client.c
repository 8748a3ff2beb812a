/*
 * The tpdb shell's JSON-lines client (tpdb_client.h): lazy connect with a
 * deadline, idle-close detection before each request, one reply line per
 * request, Ctrl-C through a flag checked whenever poll() is interrupted.
 */
#include "shell/tpdb_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONNECT_MS 3000

static long long nowMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tpdbClientInit(struct tpdb_client *c,
                    const char *addr,
                    volatile sig_atomic_t *cancel)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->cancel = cancel;
    snprintf(c->addr, sizeof c->addr, "%s", addr);
}

void tpdbClientClose(struct tpdb_client *c)
{
    if (c->fd >= 0) {
        close(c->fd);
    }
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}

int tpdbClientSplitAddr(const char *addr,
                        char *host,
                        size_t size,
                        unsigned *port)
{
    const char *colon = strrchr(addr, ':');
    char *end;
    if (colon == NULL || colon == addr || colon[1] == '\0' ||
        (size_t)(colon - addr) >= size) {
        return -1;
    }
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || p == 0 || p > 65535) {
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    *port = (unsigned)p;
    return 0;
}

/* Waits for events on fd until deadline (ms, monotonic). Returns 1 when
 * ready, 0 at the deadline, -1 if interrupted by *cancel, -2 on error. */
static int waitFd(struct tpdb_client *c, short events, long long deadline)
{
    struct pollfd p = {.fd = c->fd, .events = events};
    for (;;) {
        long long left = deadline - nowMs();
        if (c->cancel != NULL && *c->cancel) {
            return -1;
        }
        if (left <= 0) {
            return 0;
        }
        int n = poll(&p, 1, left > 200 ? 200 : (int)left);
        if (n > 0) {
            return 1;
        }
        if (n < 0 && errno != EINTR) {
            return -2;
        }
    }
}

/* Connects one address within deadline. Returns 0 or -1 (errmsg set). */
static int connectOne(struct tpdb_client *c,
                      const struct addrinfo *ai,
                      long long deadline)
{
    c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        snprintf(c->errmsg, sizeof c->errmsg, "socket: %s", strerror(errno));
        return -1;
    }
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    int rc = connect(c->fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
        int err = 0;
        socklen_t len = sizeof err;
        int w = waitFd(c, POLLOUT, deadline);
        if (w <= 0) {
            errno = w == 0 ? ETIMEDOUT : EINTR;
        } else if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0) {
            errno = err;
            rc = err == 0 ? 0 : -1;
        }
    }
    if (rc != 0) {
        snprintf(c->errmsg, sizeof c->errmsg, "connect to %s: %s", c->addr,
                 strerror(errno));
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

static int doConnect(struct tpdb_client *c)
{
    char host[TPDB_CLIENT_ADDR_MAX], port[16];
    unsigned p;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (tpdbClientSplitAddr(c->addr, host, sizeof host, &p) != 0) {
        snprintf(c->errmsg, sizeof c->errmsg, "bad address '%s' (HOST:PORT)",
                 c->addr);
        return -1;
    }
    snprintf(port, sizeof port, "%u", p);
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        snprintf(c->errmsg, sizeof c->errmsg, "resolve %s: %s", host,
                 gai_strerror(gai));
        return -1;
    }
    long long deadline = nowMs() + CONNECT_MS;
    int rc = -1;
    for (struct addrinfo *ai = res; ai != NULL && rc != 0; ai = ai->ai_next) {
        rc = connectOne(c, ai, deadline);
    }
    freeaddrinfo(res);
    return rc;
}

/* Whether the node closed the open connection (idle timeout, restart). */
static int peerClosed(struct tpdb_client *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    char b;
    if (poll(&p, 1, 0) <= 0) {
        return 0;
    }
    return recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) <= 0;
}

/* Sends text; returns bytes sent before a failure, or len. */
static size_t sendAll(struct tpdb_client *c,
                      const char *text,
                      size_t len,
                      long long deadline)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(c->fd, text + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (waitFd(c, POLLOUT, deadline) <= 0) {
                break;
            }
        } else {
            snprintf(c->errmsg, sizeof c->errmsg, "send to %s: %s", c->addr,
                     n < 0 ? strerror(errno) : "closed");
            break;
        }
    }
    return off;
}

/* Takes a whole line out of the buffer, if there is one. */
static char *takeLine(struct tpdb_client *c, size_t *len)
{
    char *nl = c->len > 0 ? memchr(c->buf, '\n', c->len) : NULL;
    if (nl == NULL) {
        return NULL;
    }
    *len = (size_t)(nl - c->buf);
    char *line = malloc(*len + 1);
    if (line == NULL) {
        return NULL;
    }
    memcpy(line, c->buf, *len);
    line[*len] = '\0';
    c->len -= *len + 1;
    memmove(c->buf, nl + 1, c->len);
    return line;
}

/* Reads until a line is buffered. Returns an outcome code. */
static int readLine(struct tpdb_client *c,
                    long long deadline,
                    char **line,
                    size_t *len)
{
    while ((*line = takeLine(c, len)) == NULL) {
        if (c->cap - c->len < 65536) {
            size_t cap = c->cap * 2 + 65536;
            char *b = realloc(c->buf, cap);
            if (b == NULL) {
                snprintf(c->errmsg, sizeof c->errmsg, "out of memory");
                return TPDB_CLIENT_NO_REPLY;
            }
            c->buf = b;
            c->cap = cap;
        }
        int w = waitFd(c, POLLIN, deadline);
        if (w <= 0) {
            snprintf(c->errmsg, sizeof c->errmsg, "%s",
                     w == 0    ? "timed out"
                     : w == -1 ? "interrupted"
                               : strerror(errno));
            return w == 0    ? TPDB_CLIENT_TIMEOUT
                   : w == -1 ? TPDB_CLIENT_INTERRUPTED
                             : TPDB_CLIENT_NO_REPLY;
        }
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR))) {
            snprintf(c->errmsg, sizeof c->errmsg, "connection to %s lost: %s",
                     c->addr, n == 0 ? "closed by the node" : strerror(errno));
            return TPDB_CLIENT_NO_REPLY;
        }
        c->len += n > 0 ? (size_t)n : 0;
    }
    return TPDB_CLIENT_OK;
}

/* Parses the reply line. */
static int parseReply(struct tpdb_client *c,
                      char *line,
                      size_t len,
                      json_t **reply)
{
    json_error_t jerr;
    *reply = json_loadb(line, len, 0, &jerr);
    free(line);
    if (*reply == NULL || !json_is_object(*reply)) {
        snprintf(c->errmsg, sizeof c->errmsg, "bad reply from %s: %s", c->addr,
                 *reply == NULL ? jerr.text : "not an object");
        json_decref(*reply);
        *reply = NULL;
        return TPDB_CLIENT_BAD_REPLY;
    }
    return TPDB_CLIENT_OK;
}

/* req as a JSON line with c->token added when req has no "token";
 * malloc'ed, or NULL if out of memory. */
static char *dumpWithToken(const struct tpdb_client *c, json_t *req)
{
    json_t *copy;
    char *text;
    if (c->token == NULL || json_object_get(req, "token") != NULL) {
        return json_dumps(req, JSON_COMPACT);
    }
    copy = json_copy(req);
    if (copy == NULL ||
        json_object_set_new(copy, "token", json_string(c->token)) != 0) {
        json_decref(copy);
        return NULL;
    }
    text = json_dumps(copy, JSON_COMPACT);
    json_decref(copy);
    return text;
}

int tpdbClientCall(struct tpdb_client *c,
                   json_t *req,
                   int timeout_ms,
                   json_t **reply)
{
    long long deadline = nowMs() + timeout_ms;
    char *line;
    size_t len;
    *reply = NULL;
    if (c->fd >= 0 && peerClosed(c)) {
        tpdbClientClose(c);
    }
    if (c->fd < 0 && c->once && c->connected) {
        snprintf(c->errmsg, sizeof c->errmsg, "connection to %s closed",
                 c->addr);
        return TPDB_CLIENT_NOT_SENT;
    }
    if (c->fd < 0 && doConnect(c) != 0) {
        return TPDB_CLIENT_NOT_SENT;
    }
    c->connected = 1;
    char *text = dumpWithToken(c, req);
    if (text == NULL) {
        snprintf(c->errmsg, sizeof c->errmsg, "out of memory");
        return TPDB_CLIENT_NOT_SENT;
    }
    size_t tlen = strlen(text);
    text[tlen] = '\n'; /* json_dumps leaves room only for the NUL. */
    size_t sent = sendAll(c, text, tlen + 1, deadline);
    free(text);
    int rc = sent == 0         ? TPDB_CLIENT_NOT_SENT
             : sent < tlen + 1 ? TPDB_CLIENT_NO_REPLY
                               : readLine(c, deadline, &line, &len);
    if (rc == TPDB_CLIENT_OK) {
        rc = parseReply(c, line, len, reply);
    }
    if (rc != TPDB_CLIENT_OK) {
        char keep[TPDB_CLIENT_ERR_MAX];
        snprintf(keep, sizeof keep, "%s", c->errmsg);
        tpdbClientClose(c);
        snprintf(c->errmsg, sizeof c->errmsg, "%s", keep);
    }
    return rc;
}

int tpdbClientNext(struct tpdb_client *c, int timeout_ms, json_t **reply)
{
    char *line;
    size_t len;
    *reply = NULL;
    int rc = c->fd >= 0 ? readLine(c, nowMs() + timeout_ms, &line, &len)
                        : TPDB_CLIENT_NO_REPLY;
    if (rc == TPDB_CLIENT_OK) {
        rc = parseReply(c, line, len, reply);
    }
    if (rc != TPDB_CLIENT_OK) {
        char keep[TPDB_CLIENT_ERR_MAX];
        snprintf(keep, sizeof keep, "%s",
                 c->fd >= 0 ? c->errmsg : "not connected");
        tpdbClientClose(c);
        snprintf(c->errmsg, sizeof c->errmsg, "%s", keep);
    }
    return rc;
}
