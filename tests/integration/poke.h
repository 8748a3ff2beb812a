/*
 * Raw connections to a node's raft port for the security tests: blocking
 * sockets, tpdb handshakes, hand-made raft 0.15 messages, the sealed
 * handshake of a client that holds (or does not hold) the cluster key, and
 * waits for the node to close a connection. Test code only; failures are
 * cmocka assertion failures.
 */
#ifndef TPDB_POKE_H
#define TPDB_POKE_H

#include <stddef.h>
#include <stdint.h>

#include "raftfsm/seal.h"

/* A blocking connection to 127.0.0.1:port with 10 s timeouts. */
int pokeConnect(unsigned port);

/* Sends n bytes; a peer that closed meanwhile is not an error. */
void pokeSend(int fd, const void *p, size_t n);

/* Encodes a plain RAFT handshake from node id into buf; its length. */
size_t pokeHello(uint8_t *buf, uint64_t id);

/* Encodes a raft message: preamble (type, header length hlen), then the
 * header's first nf u64 fields (the rest zero up to hlen, at most 4096).
 * Returns its length. */
size_t pokeMessage(uint8_t *buf,
                   uint64_t type,
                   uint64_t hlen,
                   const uint64_t *fields,
                   size_t nf);

/* Reads and drops whatever comes until the node closes the connection;
 * returns 1 if it did within ms, 0 if not. Closes fd either way. Counts
 * the bytes that came in *got if not NULL. */
int pokeClosedWithin(int fd, int ms, size_t *got);

/* Runs the connecting side's sealed handshake of `type` from node id with
 * key (32 bytes) on a new connection to port. Returns the connection and
 * the session keys in *s, or -1 if the node refused (closed it). */
int pokeSealed(unsigned port,
               int type,
               uint64_t id,
               const uint8_t *key,
               struct tpdb_seal_session *s);

/* Writes a key file (mode 0600) of 32 bytes made from `seed`, and the key
 * into key (32 bytes) if not NULL. */
void pokeKeyFile(const char *path, unsigned seed, uint8_t *key);

#endif /* TPDB_POKE_H */
