/*
 * Raw connections for the security tests (see poke.h).
 */
#include "tests/integration/poke.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "raftfsm/transport.h"

int pokeConnect(unsigned port)
{
    struct sockaddr_in sa;
    struct timeval tv = {10, 0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fail_msg("cannot connect to 127.0.0.1:%u: %s (is the node alive?)",
                 port, strerror(errno));
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

void pokeSend(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t put = send(fd, b, n, MSG_NOSIGNAL);
        if (put <= 0) {
            return;
        }
        b += put;
        n -= (size_t)put;
    }
}

size_t pokeHello(uint8_t *buf, uint64_t id)
{
    return tpdbHandshakeEncode(buf, TPDB_HANDSHAKE_RAFT, id, "127.0.0.1:9");
}

size_t pokeMessage(uint8_t *buf,
                   uint64_t type,
                   uint64_t hlen,
                   const uint64_t *fields,
                   size_t nf)
{
    size_t body = hlen < 4096 ? (size_t)hlen : 4096;
    tpdbPut64(buf, type);
    tpdbPut64(buf + 8, hlen);
    memset(buf + 16, 0, body);
    for (size_t i = 0; i < nf && 8 * i + 8 <= body; i++) {
        tpdbPut64(buf + 16 + 8 * i, fields[i]);
    }
    return 16 + body;
}

int pokeClosedWithin(int fd, int ms, size_t *got)
{
    uint64_t deadline = tpdbNowMs() + (uint64_t)ms;
    size_t total = 0;
    int closed = 0;
    while (!closed) {
        uint64_t now = tpdbNowMs();
        struct pollfd pf = {fd, POLLIN, 0};
        char buf[4096];
        if (now >= deadline || poll(&pf, 1, (int)(deadline - now)) <= 0) {
            break;
        }
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            total += (size_t)n;
        } else if (n == 0 || errno != EINTR) {
            closed = 1;
        }
    }
    close(fd);
    if (got != NULL) {
        *got = total;
    }
    return closed;
}

static int readAll(int fd, uint8_t *b, size_t n)
{
    while (n > 0) {
        ssize_t got = recv(fd, b, n, 0);
        if (got <= 0) {
            return -1;
        }
        b += got;
        n -= (size_t)got;
    }
    return 0;
}

int pokeSealed(unsigned port,
               int type,
               uint64_t id,
               const uint8_t *key,
               struct tpdb_seal_session *s)
{
    struct tpdb_seal_keys keys = {1, {{0}}};
    struct tpdb_seal_hs hs;
    uint8_t hello[TPDB_HANDSHAKE_MAX + TPDB_SEAL_HELLO];
    uint8_t server[TPDB_SEAL_SERVER];
    uint8_t fin[TPDB_SEAL_FINISH];
    char errmsg[TPDB_ERRMSG_SIZE];
    int fd = pokeConnect(port);
    size_t n = tpdbHandshakeEncode(hello, type, id, "127.0.0.1:9");
    memcpy(keys.key[0], key, TPDB_SEAL_KEY);
    tpdbHandshakeSetSealed(hello);
    tpdbSealClientHello(&hs, &keys, hello, n, hello + n);
    pokeSend(fd, hello, n + TPDB_SEAL_HELLO);
    if (readAll(fd, server, sizeof server) != 0 ||
        tpdbSealClientFinish(&hs, server, 0, fin, s, errmsg) != TPDB_OK) {
        close(fd);
        return -1;
    }
    pokeSend(fd, fin, sizeof fin);
    return fd;
}

void pokeKeyFile(const char *path, unsigned seed, uint8_t *key)
{
    uint8_t k[TPDB_SEAL_KEY];
    char hex[2 * TPDB_SEAL_KEY + 2];
    for (unsigned i = 0; i < sizeof k; i++) {
        k[i] = (uint8_t)(seed * 131u + i * 29u + 7u);
    }
    sodium_bin2hex(hex, sizeof hex, k, sizeof k);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, hex, strlen(hex)), (ssize_t)strlen(hex));
    assert_int_equal(write(fd, "\n", 1), 1);
    close(fd);
    if (key != NULL) {
        memcpy(key, k, sizeof k);
    }
}
