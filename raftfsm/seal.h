/*
 * The cluster key: mutual authentication of peers and sealed (encrypted and
 * authenticated) streams, with libsodium. Pure functions: the transport,
 * the join client and the fetch client do the I/O.
 *
 * Handshake, after the plain tpdb handshake header H (transport.c) sent by
 * the connecting side ("client") with its sealed flag set:
 *   client -> server  Rc (32 random bytes), M0 = HMAC(K, "tpdb hello"|H|Rc)
 *   server -> client  "TPDS", u16 version 1, u16 0, u64 server id, Rs (32),
 *                     Ms = HMAC(K, "tpdb server"|T)
 *   client -> server  Mc = HMAC(K, "tpdb client"|T)
 * where T = SHA-256(H|Rc|M0|server hello up to Rs), so both node ids, both
 * fresh randoms and the connection type are bound. M0 only tells the
 * server which of its keys (current or next, during a rotation) the client
 * holds; Ms and Mc prove each side holds it for this connection, so a
 * replayed handshake fails. Keys per direction: HMAC(K, "tpdb c2s"|T) and
 * HMAC(K, "tpdb s2c"|T).
 *
 * Records: u32 plaintext length n (1..TPDB_SEAL_RECORD_MAX), then n bytes
 * of ChaCha20-Poly1305 (IETF) ciphertext and its 16-byte tag, the length as
 * associated data, the nonce the record's number in its direction (u64,
 * from 0). A replayed, reordered, dropped or altered record fails to open.
 */
#ifndef TPDB_SEAL_H
#define TPDB_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "base/base.h"

#define TPDB_SEAL_KEY 32
#define TPDB_SEAL_HELLO 64  /* Rc, M0 */
#define TPDB_SEAL_SERVER 80 /* the server's hello */
#define TPDB_SEAL_FINISH 32 /* Mc */
#define TPDB_SEAL_LEN 4
#define TPDB_SEAL_TAG 16
#define TPDB_SEAL_OVERHEAD (TPDB_SEAL_LEN + TPDB_SEAL_TAG)
#define TPDB_SEAL_RECORD_MAX 65536

/* The environment variable that may hold the key as 64 hex digits. */
#define TPDB_SEAL_ENV "TPDB_REPLICATION_KEY"

/* A node's keys: key[0] is used for connections it makes and accepted, and
 * key[1] (n == 2, a rotation's other key) is accepted too. n == 0: none. */
struct tpdb_seal_keys {
    int n;
    uint8_t key[2][TPDB_SEAL_KEY];
};

/* A sealed stream's state, one per connection. */
struct tpdb_seal_session {
    uint8_t tx[TPDB_SEAL_KEY];
    uint8_t rx[TPDB_SEAL_KEY];
    uint64_t tx_n;
    uint64_t rx_n;
};

/* One handshake in progress. Wiped by the finish functions. */
struct tpdb_seal_hs {
    uint8_t key[TPDB_SEAL_KEY];
    crypto_hash_sha256_state t;
    uint8_t th[32];
};

/* Initialises libsodium; TPDB_IOERR if it cannot. Safe to repeat. */
int tpdbSealInit(char *errmsg);

/* Loads keys: from key_file (64 hex digits, optionally a newline; the file
 * must not be readable by group or others) or, if key_file is NULL, from
 * the TPDB_REPLICATION_KEY environment variable; key_file_next (may be
 * NULL) adds the rotation key. No key anywhere: TPDB_OK with k->n == 0
 * (key_file_next alone is an error). Errors: TPDB_INVALID (errmsg names
 * the file or variable and what is wrong), TPDB_IOERR. */
int tpdbSealKeysLoad(struct tpdb_seal_keys *k,
                     const char *key_file,
                     const char *key_file_next,
                     char *errmsg);

/* Parses 64 hex digits into key. Errors: TPDB_INVALID. */
int tpdbSealKeyParse(const char *hex, uint8_t *key, char *errmsg);

/* Client: appends Rc and M0 for header h (h_len bytes) to out
 * (TPDB_SEAL_HELLO bytes), with k->key[0]. */
void tpdbSealClientHello(struct tpdb_seal_hs *hs,
                         const struct tpdb_seal_keys *k,
                         const uint8_t *h,
                         size_t h_len,
                         uint8_t *out);

/* Client: checks the server's hello (TPDB_SEAL_SERVER bytes), from node
 * expect_id if not 0, writes Mc into out (TPDB_SEAL_FINISH bytes) and the
 * session keys into s. Errors: TPDB_PROTO (not our key, another node, a
 * bad hello; errmsg says which). hs is wiped either way. */
int tpdbSealClientFinish(struct tpdb_seal_hs *hs,
                         const uint8_t *server,
                         uint64_t expect_id,
                         uint8_t *out,
                         struct tpdb_seal_session *s,
                         char *errmsg);

/* Server: checks the client's hello extension ext (TPDB_SEAL_HELLO bytes)
 * after header h against each of k's keys and writes the server hello for
 * node `id` into out (TPDB_SEAL_SERVER bytes). Errors: TPDB_PROTO (no key
 * of ours made M0). */
int tpdbSealServerHello(struct tpdb_seal_hs *hs,
                        const struct tpdb_seal_keys *k,
                        const uint8_t *h,
                        size_t h_len,
                        const uint8_t *ext,
                        uint64_t id,
                        uint8_t *out,
                        char *errmsg);

/* Server: checks Mc (TPDB_SEAL_FINISH bytes) and sets s. Errors:
 * TPDB_PROTO. hs is wiped either way. */
int tpdbSealServerFinish(struct tpdb_seal_hs *hs,
                         const uint8_t *fin,
                         struct tpdb_seal_session *s,
                         char *errmsg);

/* Seals the n (1..TPDB_SEAL_RECORD_MAX) bytes at rec + TPDB_SEAL_LEN in
 * place: writes the length before them and the tag after them. Returns the
 * record's whole length, n + TPDB_SEAL_OVERHEAD. */
size_t tpdbSealRecord(struct tpdb_seal_session *s, uint8_t *rec, size_t n);

/* Decodes a record's length prefix (TPDB_SEAL_LEN bytes) into *n.
 * Errors: TPDB_PROTO (0 or above TPDB_SEAL_RECORD_MAX). */
int tpdbSealRecordLen(const uint8_t *rec, size_t *n, char *errmsg);

/* Opens a whole record of n plaintext bytes in place (plaintext at rec +
 * TPDB_SEAL_LEN). Errors: TPDB_PROTO (forged, altered, replayed or out of
 * order). */
int tpdbSealOpen(struct tpdb_seal_session *s,
                 uint8_t *rec,
                 size_t n,
                 char *errmsg);

#endif /* TPDB_SEAL_H */
