/*
 * A blocking byte channel over a socket, plain or sealed (seal.h), for the
 * FETCH streams that fetch.c serves and reads on threads of their own. A
 * sealed channel writes each chunk of up to TPDB_SEAL_RECORD_MAX bytes as a
 * record and reads records whole, so a channel holds at most one record
 * each way. tpdbChanConnect also does the connecting side's handshake.
 */
#ifndef TPDB_CHAN_H
#define TPDB_CHAN_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "raftfsm/seal.h"

/* One stream's channel; owned by its thread. Private. */
struct tpdb_chan {
    int fd; /* borrowed: closing it is the owner's */
    int sealed;
    struct tpdb_seal_session s;
    uint8_t *rec; /* sealed: the record read, tpdb_malloc'ed */
    size_t pos;   /* plaintext bytes of it already read */
    size_t len;   /* its plaintext length */
    uint8_t *out; /* sealed: a record being written */
};

/* Makes ch a channel over fd (blocking), sealed with a copy of session
 * unless session is NULL. */
void tpdbChanInit(struct tpdb_chan *ch,
                  int fd,
                  const struct tpdb_seal_session *session);

/* Frees and wipes what ch holds; fd stays open. */
void tpdbChanClose(struct tpdb_chan *ch);

/* Reads exactly n bytes. Errors: TPDB_PROTO (the peer closed, or a record
 * that does not open), TPDB_IOERR (errno-level failure or timeout),
 * TPDB_NOMEM. */
int tpdbChanRead(struct tpdb_chan *ch, void *buf, size_t n);

/* Writes n bytes. Errors: TPDB_IOERR, TPDB_NOMEM. */
int tpdbChanWrite(struct tpdb_chan *ch, const void *buf, size_t n);

/* Sends the handshake of `type` from node `id` at `address` on fd and, if
 * keys holds a key, runs the sealed handshake with the server (any node id
 * holding the key); on TPDB_OK ch is ready. Errors: TPDB_PROTO (the peer
 * does not hold our key, or refused us), TPDB_IOERR, TPDB_INVALID. */
int tpdbChanConnect(struct tpdb_chan *ch,
                    int fd,
                    const struct tpdb_seal_keys *keys,
                    int type,
                    uint64_t id,
                    const char *address,
                    char *errmsg);

#endif /* TPDB_CHAN_H */
