/*
 * A TCP proxy for the integration tests: listens on a kernel-chosen
 * loopback port and forwards every connection to a target port, on a
 * thread of its own, keeping a copy of every byte it relayed (up to
 * PROXY_KEEP bytes) so a test can look for plaintext on the wire. Test
 * code only; failures are cmocka assertion failures.
 */
#ifndef TPDB_PROXY_H
#define TPDB_PROXY_H

#include <pthread.h>
#include <stddef.h>

#define PROXY_KEEP (64u << 20)
#define PROXY_PAIRS 32

/* A running proxy. Fields are the thread's until proxyStop. */
struct proxy {
    unsigned port;   /* where it listens */
    unsigned target; /* where it forwards */
    int listen_fd;
    int stop_pipe[2];
    pthread_t thread;
    int fds[PROXY_PAIRS][2]; /* accepted, upstream; -1 free */
    unsigned char *kept;     /* relayed bytes, both directions */
    size_t kept_len;
    unsigned long connections;
};

/* Starts a proxy to 127.0.0.1:target; p->port is its port afterwards. */
void proxyStart(struct proxy *p, unsigned target);

/* Stops the thread and closes every socket; p->kept stays readable until
 * proxyFree. */
void proxyStop(struct proxy *p);

/* Whether the kept bytes contain `needle` (len bytes). After proxyStop. */
int proxySaw(const struct proxy *p, const void *needle, size_t len);

/* Frees the kept bytes. */
void proxyFree(struct proxy *p);

#endif /* TPDB_PROXY_H */
