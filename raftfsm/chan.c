/*
 * Blocking channels, plain or sealed (see chan.h).
 */
#include "raftfsm/chan.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "raftfsm/transport.h"

#define REC_BYTES (TPDB_SEAL_RECORD_MAX + TPDB_SEAL_OVERHEAD)

static int readFull(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t got = recv(fd, p, n, 0);
        if (got <= 0) {
            if (got < 0 && errno == EINTR) {
                continue;
            }
            return got == 0 ? TPDB_PROTO : TPDB_IOERR;
        }
        p += got;
        n -= (size_t)got;
    }
    return TPDB_OK;
}

static int writeFull(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t put = send(fd, p, n, MSG_NOSIGNAL);
        if (put < 0) {
            if (errno == EINTR) {
                continue;
            }
            return TPDB_IOERR;
        }
        p += put;
        n -= (size_t)put;
    }
    return TPDB_OK;
}

void tpdbChanInit(struct tpdb_chan *ch,
                  int fd,
                  const struct tpdb_seal_session *session)
{
    memset(ch, 0, sizeof *ch);
    ch->fd = fd;
    if (session != NULL) {
        ch->sealed = 1;
        ch->s = *session;
    }
}

void tpdbChanClose(struct tpdb_chan *ch)
{
    tpdb_free(ch->rec);
    tpdb_free(ch->out);
    sodium_memzero(&ch->s, sizeof ch->s);
    ch->rec = NULL;
    ch->out = NULL;
}

/* Reads and opens the next record. */
static int recordIn(struct tpdb_chan *ch)
{
    size_t len;
    int rc;
    if (ch->rec == NULL && (ch->rec = tpdb_malloc(REC_BYTES)) == NULL) {
        return TPDB_NOMEM;
    }
    rc = readFull(ch->fd, ch->rec, TPDB_SEAL_LEN);
    if (rc == TPDB_OK) {
        rc = tpdbSealRecordLen(ch->rec, &len, NULL);
    }
    if (rc == TPDB_OK) {
        rc = readFull(ch->fd, ch->rec + TPDB_SEAL_LEN, len + TPDB_SEAL_TAG);
    }
    if (rc == TPDB_OK) {
        rc = tpdbSealOpen(&ch->s, ch->rec, len, NULL);
    }
    if (rc == TPDB_OK) {
        ch->pos = 0;
        ch->len = len;
    }
    return rc;
}

int tpdbChanRead(struct tpdb_chan *ch, void *buf, size_t n)
{
    uint8_t *p = buf;
    if (!ch->sealed) {
        return readFull(ch->fd, buf, n);
    }
    while (n > 0) {
        size_t take;
        if (ch->pos == ch->len) {
            int rc = recordIn(ch);
            if (rc != TPDB_OK) {
                return rc;
            }
        }
        take = ch->len - ch->pos < n ? ch->len - ch->pos : n;
        memcpy(p, ch->rec + TPDB_SEAL_LEN + ch->pos, take);
        ch->pos += take;
        p += take;
        n -= take;
    }
    return TPDB_OK;
}

int tpdbChanWrite(struct tpdb_chan *ch, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    if (!ch->sealed) {
        return writeFull(ch->fd, buf, n);
    }
    if (ch->out == NULL && (ch->out = tpdb_malloc(REC_BYTES)) == NULL) {
        return TPDB_NOMEM;
    }
    while (n > 0) {
        size_t take = n < TPDB_SEAL_RECORD_MAX ? n : TPDB_SEAL_RECORD_MAX;
        size_t len;
        int rc;
        memcpy(ch->out + TPDB_SEAL_LEN, p, take);
        len = tpdbSealRecord(&ch->s, ch->out, take);
        rc = writeFull(ch->fd, ch->out, len);
        if (rc != TPDB_OK) {
            return rc;
        }
        p += take;
        n -= take;
    }
    return TPDB_OK;
}

/* The sealed part of the connecting side's handshake. */
static int sealedConnect(struct tpdb_chan *ch,
                         struct tpdb_seal_hs *hs,
                         char *errmsg)
{
    uint8_t server[TPDB_SEAL_SERVER];
    uint8_t fin[TPDB_SEAL_FINISH];
    struct tpdb_seal_session s;
    int rc = readFull(ch->fd, server, sizeof server);
    if (rc != TPDB_OK) {
        sodium_memzero(hs, sizeof *hs);
        tpdbErrf(errmsg,
                 "sealed handshake: no answer (does the peer hold "
                 "our cluster key?)");
        return rc;
    }
    rc = tpdbSealClientFinish(hs, server, 0, fin, &s, errmsg);
    if (rc == TPDB_OK) {
        rc = writeFull(ch->fd, fin, sizeof fin);
    }
    if (rc == TPDB_OK) {
        tpdbChanInit(ch, ch->fd, &s);
    }
    sodium_memzero(&s, sizeof s);
    return rc;
}

int tpdbChanConnect(struct tpdb_chan *ch,
                    int fd,
                    const struct tpdb_seal_keys *keys,
                    int type,
                    uint64_t id,
                    const char *address,
                    char *errmsg)
{
    uint8_t hello[TPDB_HANDSHAKE_MAX + TPDB_SEAL_HELLO];
    struct tpdb_seal_hs hs;
    size_t n = tpdbHandshakeEncode(hello, type, id, address);
    int sealed = keys != NULL && keys->n > 0;
    int rc;
    tpdbChanInit(ch, fd, NULL);
    if (n == 0) {
        tpdbErrf(errmsg, "bad id or address for a handshake");
        return TPDB_INVALID;
    }
    if (sealed) {
        tpdbHandshakeSetSealed(hello);
        tpdbSealClientHello(&hs, keys, hello, n, hello + n);
        n += TPDB_SEAL_HELLO;
    }
    rc = writeFull(fd, hello, n);
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "handshake: send failed");
        sodium_memzero(&hs, sizeof hs);
        return rc;
    }
    return sealed ? sealedConnect(ch, &hs, errmsg) : TPDB_OK;
}
