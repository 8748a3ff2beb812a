/*
 * The tests' TCP proxy (see proxy.h): one thread, poll() over the listener
 * and every pair of sockets.
 */
#include "tests/integration/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

static int connectTo(unsigned port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void keep(struct proxy *p, const unsigned char *b, size_t n)
{
    if (p->kept_len + n <= PROXY_KEEP) {
        memcpy(p->kept + p->kept_len, b, n);
        p->kept_len += n;
    }
}

static void pairClose(struct proxy *p, int i)
{
    close(p->fds[i][0]);
    close(p->fds[i][1]);
    p->fds[i][0] = p->fds[i][1] = -1;
}

static void acceptOne(struct proxy *p)
{
    int in = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    int out = in >= 0 ? connectTo(p->target) : -1;
    for (int i = 0; i < PROXY_PAIRS && out >= 0; i++) {
        if (p->fds[i][0] < 0) {
            p->fds[i][0] = in;
            p->fds[i][1] = out;
            p->connections++;
            return;
        }
    }
    if (in >= 0) {
        close(in);
    }
    if (out >= 0) {
        close(out);
    }
}

/* Moves what is readable on fds[i][side] to the other side. */
static void forward(struct proxy *p, int i, int side)
{
    unsigned char buf[65536];
    ssize_t n = recv(p->fds[i][side], buf, sizeof buf, 0);
    if (n <= 0) {
        pairClose(p, i);
        return;
    }
    keep(p, buf, (size_t)n);
    for (ssize_t off = 0; off < n;) {
        ssize_t put = send(p->fds[i][1 - side], buf + off, (size_t)(n - off),
                           MSG_NOSIGNAL);
        if (put <= 0) {
            pairClose(p, i);
            return;
        }
        off += put;
    }
}

static void *proxyThread(void *arg)
{
    struct proxy *p = arg;
    for (;;) {
        struct pollfd pf[2 + 2 * PROXY_PAIRS];
        int map[2 + 2 * PROXY_PAIRS];
        int n = 0;
        pf[n].fd = p->stop_pipe[0];
        pf[n++].events = POLLIN;
        pf[n].fd = p->listen_fd;
        pf[n++].events = POLLIN;
        for (int i = 0; i < PROXY_PAIRS; i++) {
            for (int side = 0; side < 2 && p->fds[i][0] >= 0; side++) {
                map[n] = i * 2 + side;
                pf[n].fd = p->fds[i][side];
                pf[n++].events = POLLIN;
            }
        }
        if (poll(pf, (nfds_t)n, -1) < 0 && errno != EINTR) {
            return NULL;
        }
        if (pf[0].revents != 0) {
            return NULL;
        }
        if (pf[1].revents & POLLIN) {
            acceptOne(p);
        }
        for (int k = 2; k < n; k++) {
            int i = map[k] / 2;
            if (pf[k].revents != 0 && p->fds[i][0] >= 0 &&
                p->fds[i][map[k] % 2] == pf[k].fd) {
                forward(p, i, map[k] % 2);
            }
        }
    }
}

void proxyStart(struct proxy *p, unsigned target)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    memset(p, 0, sizeof *p);
    p->target = target;
    p->kept = malloc(PROXY_KEEP);
    assert_non_null(p->kept);
    for (int i = 0; i < PROXY_PAIRS; i++) {
        p->fds[i][0] = p->fds[i][1] = -1;
    }
    p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(p->listen_fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(p->listen_fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(p->listen_fd, 16), 0);
    assert_int_equal(getsockname(p->listen_fd, (struct sockaddr *)&sa, &sl), 0);
    p->port = ntohs(sa.sin_port);
    assert_int_equal(pipe(p->stop_pipe), 0);
    assert_int_equal(pthread_create(&p->thread, NULL, proxyThread, p), 0);
}

void proxyStop(struct proxy *p)
{
    assert_int_equal(write(p->stop_pipe[1], "x", 1), 1);
    pthread_join(p->thread, NULL);
    for (int i = 0; i < PROXY_PAIRS; i++) {
        if (p->fds[i][0] >= 0) {
            pairClose(p, i);
        }
    }
    close(p->listen_fd);
    close(p->stop_pipe[0]);
    close(p->stop_pipe[1]);
}

int proxySaw(const struct proxy *p, const void *needle, size_t len)
{
    return memmem(p->kept, p->kept_len, needle, len) != NULL;
}

void proxyFree(struct proxy *p)
{
    free(p->kept);
    p->kept = NULL;
}
