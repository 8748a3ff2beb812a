/*
 * The cluster key (see seal.h): key loading, the handshake's MACs and key
 * derivation (HMAC-SHA-256 over a SHA-256 transcript) and records
 * (ChaCha20-Poly1305 IETF with counter nonces), all with libsodium.
 */
#include "raftfsm/seal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SERVER_MAGIC 0x53445054u /* "TPDS" little-endian */

int tpdbSealInit(char *errmsg)
{
    if (sodium_init() < 0) {
        tpdbErrf(errmsg, "libsodium cannot be initialised");
        return TPDB_IOERR;
    }
    return TPDB_OK;
}

int tpdbSealKeyParse(const char *hex, uint8_t *key, char *errmsg)
{
    size_t len = strlen(hex);
    size_t bin_len = 0;
    while (len > 0 && (hex[len - 1] == '\n' || hex[len - 1] == '\r')) {
        len--;
    }
    if (len != 2 * TPDB_SEAL_KEY ||
        sodium_hex2bin(key, TPDB_SEAL_KEY, hex, len, NULL, &bin_len, NULL) !=
            0 ||
        bin_len != TPDB_SEAL_KEY) {
        tpdbErrf(errmsg, "want 64 hex digits (32 bytes), got %zu characters",
                 len);
        return TPDB_INVALID;
    }
    return TPDB_OK;
}

/* Reads a key file, refusing one that others may read. */
static int keyFile(const char *path, uint8_t *key, char *errmsg)
{
    char text[160];
    struct stat st;
    ssize_t n;
    int rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        tpdbErrf(errmsg, "key file %s: %s", path, strerror(errno));
        return TPDB_IOERR;
    }
    if (fstat(fd, &st) != 0 || (st.st_mode & 077) != 0) {
        tpdbErrf(errmsg,
                 "key file %s: readable by group or others "
                 "(chmod 600 it)",
                 path);
        close(fd);
        return TPDB_INVALID;
    }
    n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n < 0) {
        tpdbErrf(errmsg, "key file %s: %s", path, strerror(errno));
        return TPDB_IOERR;
    }
    text[n] = '\0';
    rc = tpdbSealKeyParse(text, key, errmsg);
    sodium_memzero(text, sizeof text);
    if (rc != TPDB_OK) {
        char why[TPDB_ERRMSG_SIZE];
        snprintf(why, sizeof why, "%s", errmsg);
        tpdbErrf(errmsg, "key file %s: %s", path, why);
    }
    return rc;
}

int tpdbSealKeysLoad(struct tpdb_seal_keys *k,
                     const char *key_file,
                     const char *key_file_next,
                     char *errmsg)
{
    const char *env = getenv(TPDB_SEAL_ENV);
    int rc = TPDB_OK;
    memset(k, 0, sizeof *k);
    if (key_file != NULL) {
        rc = keyFile(key_file, k->key[0], errmsg);
    } else if (env != NULL && env[0] != '\0') {
        rc = tpdbSealKeyParse(env, k->key[0], errmsg);
        if (rc != TPDB_OK) {
            char why[TPDB_ERRMSG_SIZE];
            snprintf(why, sizeof why, "%s", errmsg);
            tpdbErrf(errmsg, "%s: %s", TPDB_SEAL_ENV, why);
        }
    } else if (key_file_next != NULL) {
        tpdbErrf(errmsg, "key_file_next without key_file or %s", TPDB_SEAL_ENV);
        return TPDB_INVALID;
    } else {
        return TPDB_OK;
    }
    if (rc == TPDB_OK && key_file_next != NULL) {
        rc = keyFile(key_file_next, k->key[1], errmsg);
        k->n = 1;
    }
    if (rc != TPDB_OK) {
        sodium_memzero(k, sizeof *k);
        return rc;
    }
    k->n = key_file_next != NULL ? 2 : 1;
    return TPDB_OK;
}

/* HMAC(key, label | data). */
static void mac(const uint8_t *key,
                const char *label,
                const uint8_t *data,
                size_t len,
                uint8_t *out)
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, TPDB_SEAL_KEY);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)label, strlen(label));
    crypto_auth_hmacsha256_update(&st, data, len);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof st);
}

/* M0 over the header and Rc. */
static void helloMac(const uint8_t *key,
                     const uint8_t *h,
                     size_t h_len,
                     const uint8_t *rc,
                     uint8_t *out)
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, TPDB_SEAL_KEY);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)"tpdb hello", 10);
    crypto_auth_hmacsha256_update(&st, h, h_len);
    crypto_auth_hmacsha256_update(&st, rc, 32);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof st);
}

void tpdbSealClientHello(struct tpdb_seal_hs *hs,
                         const struct tpdb_seal_keys *k,
                         const uint8_t *h,
                         size_t h_len,
                         uint8_t *out)
{
    memcpy(hs->key, k->key[0], TPDB_SEAL_KEY);
    randombytes_buf(out, 32);
    helloMac(hs->key, h, h_len, out, out + 32);
    crypto_hash_sha256_init(&hs->t);
    crypto_hash_sha256_update(&hs->t, h, h_len);
    crypto_hash_sha256_update(&hs->t, out, TPDB_SEAL_HELLO);
}

/* Ends the transcript with the server hello up to Rs. */
static void transcriptEnd(struct tpdb_seal_hs *hs, const uint8_t *server)
{
    crypto_hash_sha256_update(&hs->t, server, TPDB_SEAL_SERVER - 32);
    crypto_hash_sha256_final(&hs->t, hs->th);
}

static void sessionKeys(struct tpdb_seal_hs *hs,
                        struct tpdb_seal_session *s,
                        int client)
{
    memset(s, 0, sizeof *s);
    mac(hs->key, client ? "tpdb c2s" : "tpdb s2c", hs->th, 32, s->tx);
    mac(hs->key, client ? "tpdb s2c" : "tpdb c2s", hs->th, 32, s->rx);
}

int tpdbSealClientFinish(struct tpdb_seal_hs *hs,
                         const uint8_t *server,
                         uint64_t expect_id,
                         uint8_t *out,
                         struct tpdb_seal_session *s,
                         char *errmsg)
{
    uint8_t want[32];
    int rc = TPDB_OK;
    transcriptEnd(hs, server);
    mac(hs->key, "tpdb server", hs->th, 32, want);
    if (tpdbGet32(server) != SERVER_MAGIC || tpdbGet16(server + 4) != 1) {
        tpdbErrf(errmsg,
                 "sealed handshake: not a tpdb server hello "
                 "(does the peer have a cluster key?)");
        rc = TPDB_PROTO;
    } else if (crypto_verify_32(want, server + TPDB_SEAL_SERVER - 32) != 0) {
        tpdbErrf(errmsg,
                 "sealed handshake: the peer does not hold our "
                 "cluster key");
        rc = TPDB_PROTO;
    } else if (expect_id != 0 && tpdbGet64(server + 8) != expect_id) {
        tpdbErrf(errmsg, "sealed handshake: peer is node %llu, not %llu",
                 (unsigned long long)tpdbGet64(server + 8),
                 (unsigned long long)expect_id);
        rc = TPDB_PROTO;
    } else {
        mac(hs->key, "tpdb client", hs->th, 32, out);
        sessionKeys(hs, s, 1);
    }
    sodium_memzero(hs, sizeof *hs);
    return rc;
}

int tpdbSealServerHello(struct tpdb_seal_hs *hs,
                        const struct tpdb_seal_keys *k,
                        const uint8_t *h,
                        size_t h_len,
                        const uint8_t *ext,
                        uint64_t id,
                        uint8_t *out,
                        char *errmsg)
{
    uint8_t want[32];
    int found = -1;
    for (int i = 0; i < k->n; i++) {
        helloMac(k->key[i], h, h_len, ext, want);
        if (found < 0 && crypto_verify_32(want, ext + 32) == 0) {
            found = i;
        }
    }
    if (found < 0) {
        tpdbErrf(errmsg,
                 "sealed handshake: the peer does not hold our "
                 "cluster key");
        return TPDB_PROTO;
    }
    memcpy(hs->key, k->key[found], TPDB_SEAL_KEY);
    crypto_hash_sha256_init(&hs->t);
    crypto_hash_sha256_update(&hs->t, h, h_len);
    crypto_hash_sha256_update(&hs->t, ext, TPDB_SEAL_HELLO);
    tpdbPut32(out, SERVER_MAGIC);
    tpdbPut16(out + 4, 1);
    tpdbPut16(out + 6, 0);
    tpdbPut64(out + 8, id);
    randombytes_buf(out + 16, 32);
    transcriptEnd(hs, out);
    mac(hs->key, "tpdb server", hs->th, 32, out + TPDB_SEAL_SERVER - 32);
    return TPDB_OK;
}

int tpdbSealServerFinish(struct tpdb_seal_hs *hs,
                         const uint8_t *fin,
                         struct tpdb_seal_session *s,
                         char *errmsg)
{
    uint8_t want[32];
    int rc = TPDB_OK;
    mac(hs->key, "tpdb client", hs->th, 32, want);
    if (crypto_verify_32(want, fin) != 0) {
        tpdbErrf(errmsg, "sealed handshake: the client's proof is wrong");
        rc = TPDB_PROTO;
    } else {
        sessionKeys(hs, s, 0);
    }
    sodium_memzero(hs, sizeof *hs);
    return rc;
}

static void nonceOf(uint64_t n, uint8_t *nonce)
{
    memset(nonce, 0, crypto_aead_chacha20poly1305_IETF_NPUBBYTES);
    tpdbPut64(nonce, n);
}

size_t tpdbSealRecord(struct tpdb_seal_session *s, uint8_t *rec, size_t n)
{
    uint8_t nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES];
    unsigned long long clen = 0;
    nonceOf(s->tx_n++, nonce);
    tpdbPut32(rec, (uint32_t)n);
    crypto_aead_chacha20poly1305_ietf_encrypt(
        rec + TPDB_SEAL_LEN, &clen, rec + TPDB_SEAL_LEN, n, rec, TPDB_SEAL_LEN,
        NULL, nonce, s->tx);
    return TPDB_SEAL_LEN + (size_t)clen;
}

int tpdbSealRecordLen(const uint8_t *rec, size_t *n, char *errmsg)
{
    uint32_t len = tpdbGet32(rec);
    if (len == 0 || len > TPDB_SEAL_RECORD_MAX) {
        tpdbErrf(errmsg, "sealed record of %u bytes", (unsigned)len);
        return TPDB_PROTO;
    }
    *n = len;
    return TPDB_OK;
}

int tpdbSealOpen(struct tpdb_seal_session *s,
                 uint8_t *rec,
                 size_t n,
                 char *errmsg)
{
    uint8_t nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES];
    unsigned long long mlen = 0;
    nonceOf(s->rx_n, nonce);
    if (crypto_aead_chacha20poly1305_ietf_decrypt(
            rec + TPDB_SEAL_LEN, &mlen, NULL, rec + TPDB_SEAL_LEN,
            n + TPDB_SEAL_TAG, rec, TPDB_SEAL_LEN, nonce, s->rx) != 0) {
        tpdbErrf(errmsg,
                 "sealed record %llu does not open (altered, "
                 "replayed or out of order)",
                 (unsigned long long)s->rx_n);
        return TPDB_PROTO;
    }
    s->rx_n++;
    return TPDB_OK;
}
