/*
 * Fuzz target for what a peer's bytes meet first: the tpdb handshake
 * decoder, the raft 0.15 wire check (raftfsm/wire.c) and sealed records
 * (raftfsm/seal.c).
 *
 * Input: byte 0 picks the chunking of the feed (and bit 7: the records
 * mode), the rest is a peer's stream. Wire mode: the stream goes to
 * tpdbHandshakeDecode and, past a valid handshake, to tpdbWireFeed in
 * chunks; the oracle is
 * that the check never alters a byte (what it passes is a prefix of its
 * input) and is consistent (what it passed, fed again in one piece, passes
 * whole). Records mode: the stream is read as sealed records under a fixed
 * key and must never open (the input holds no valid tag), and a record
 * sealed from the input must open once, and fail when replayed or when any
 * byte of it is flipped. A crash, leak or out-of-bounds access is a bug.
 *
 * Two builds of this one file:
 * - libFuzzer (clang): meson builds `fuzz_wire` when the compiler is clang;
 *   by hand:
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I. \
 *       tests/fuzz/fuzz_wire.c raftfsm/wire.c raftfsm/seal.c \
 *       raftfsm/transport.c ... (see tests/fuzz/meson.build) -lsodium
 *     ./fuzz_wire -max_total_time=600 scratch/ tests/fuzz/wire/
 * - Replay (any compiler, -DTPDB_FUZZ_REPLAY): runs every file under the
 *   directories given, then --mutations N seeded mutations of them; it
 *   fails if a directory is missing or empty, if a file named valid_* is
 *   not passed whole or one named bad_* is, or if an oracle fails. It runs
 *   in the unit suite.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "raftfsm/seal.h"
#include "raftfsm/transport.h"
#include "raftfsm/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the check passed on, kept for the oracle. */
struct fzOut {
    uint8_t *buf;
    size_t len;
    size_t cap;
};

static int fzEmit(void *arg, const uint8_t *p, size_t n)
{
    struct fzOut *o = arg;
    if (o->len + n > o->cap) {
        size_t cap = (o->len + n) * 2;
        uint8_t *b = realloc(o->buf, cap);
        if (b == NULL) {
            return TPDB_NOMEM;
        }
        o->buf = b;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return TPDB_OK;
}

static uint64_t fzTerm(void *arg)
{
    (void)arg;
    return 5;
}

/* Feeds p to a wire check in chunks; returns how many bytes it passed. */
static size_t fzWire(unsigned chunk, const uint8_t *p, size_t n)
{
    struct tpdb_wire_limits limits = {0, 0, 1u << 20, fzTerm, NULL, 0};
    struct tpdb_wire w;
    struct fzOut out = {NULL, 0, 0};
    struct fzOut again = {NULL, 0, 0};
    char errmsg[TPDB_ERRMSG_SIZE];
    int rc = TPDB_OK;
    tpdbWireInit(&w, &limits);
    for (size_t at = 0; at < n && rc == TPDB_OK;) {
        size_t take = chunk == 0 ? n - at : chunk;
        take = take < n - at ? take : n - at;
        rc = tpdbWireFeed(&w, p + at, take, fzEmit, &out, errmsg);
        at += take;
    }
    tpdbWireClose(&w);
    if (out.len > n || (out.len > 0 && memcmp(out.buf, p, out.len) != 0)) {
        abort(); /* the check altered or invented bytes */
    }
    if (out.len > 0) {
        tpdbWireInit(&w, &limits);
        rc = tpdbWireFeed(&w, out.buf, out.len, fzEmit, &again, errmsg);
        tpdbWireClose(&w);
        if (rc != TPDB_OK || again.len != out.len) {
            abort(); /* what passed once must pass again */
        }
    }
    free(out.buf);
    free(again.buf);
    return out.len;
}

static void fzRecords(const uint8_t *p, size_t n)
{
    struct tpdb_seal_session s;
    uint8_t *rec = malloc(TPDB_SEAL_OVERHEAD + TPDB_SEAL_RECORD_MAX);
    size_t len;
    if (rec == NULL) {
        return;
    }
    memset(&s, 0x5a, sizeof s);
    s.tx_n = s.rx_n = 0;
    memcpy(s.rx, s.tx, sizeof s.rx); /* talks to itself */
    if (n >= TPDB_SEAL_LEN && tpdbSealRecordLen(p, &len, NULL) == TPDB_OK &&
        TPDB_SEAL_OVERHEAD + len <= n) {
        memcpy(rec, p, TPDB_SEAL_OVERHEAD + len);
        if (tpdbSealOpen(&s, rec, len, NULL) == TPDB_OK) {
            abort(); /* forged a tag */
        }
    }
    len = n == 0 ? 1 : n < TPDB_SEAL_RECORD_MAX ? n : TPDB_SEAL_RECORD_MAX;
    memset(rec + TPDB_SEAL_LEN, 0, len);
    memcpy(rec + TPDB_SEAL_LEN, p, n < len ? n : len);
    size_t whole = tpdbSealRecord(&s, rec, len);
    uint8_t *copy = malloc(whole);
    if (copy != NULL) {
        memcpy(copy, rec, whole);
        size_t flip = n > 0 ? p[0] % whole : 0;
        if (tpdbSealOpen(&s, rec, len, NULL) != TPDB_OK) {
            abort();
        }
        memcpy(rec, copy, whole);
        if (tpdbSealOpen(&s, rec, len, NULL) == TPDB_OK) {
            abort(); /* replay accepted */
        }
        s.rx_n--;
        copy[flip] ^= 0x20;
        if (tpdbSealOpen(&s, copy, len, NULL) == TPDB_OK) {
            abort(); /* altered record accepted */
        }
        free(copy);
    }
    free(rec);
}

/* Runs one wire-mode input; returns the stream's length past the
 * handshake and what the check passed of it. */
static void fzOne(const uint8_t *data, size_t size, size_t *len, size_t *ok);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t len;
    size_t ok;
    if (size == 0) {
        return 0;
    }
    if (data[0] & 0x80) {
        fzRecords(data + 1, size - 1);
        return 0;
    }
    fzOne(data, size, &len, &ok);
    return 0;
}

static void fzOne(const uint8_t *data, size_t size, size_t *len, size_t *ok)
{
    static const unsigned chunks[] = {0, 1, 3, 7, 16, 24, 100, 4096};
    char errmsg[TPDB_ERRMSG_SIZE];
    int type;
    uint64_t id;
    size_t alen;
    unsigned chunk = chunks[data[0] % 8];
    data++;
    size--;
    /* A valid handshake is skipped, as the transport does; else the wire
     * check gets everything. */
    if (size >= TPDB_HANDSHAKE_HDR &&
        tpdbHandshakeDecode(data, &type, &id, &alen, errmsg) == TPDB_OK &&
        TPDB_HANDSHAKE_HDR + alen <= size) {
        size_t skip = TPDB_HANDSHAKE_HDR + alen;
        skip += tpdbHandshakeSealed(data) ? TPDB_SEAL_HELLO : 0;
        skip = skip < size ? skip : size;
        data += skip;
        size -= skip;
    }
    *len = size;
    *ok = fzWire(chunk, data, size);
}

#ifdef TPDB_FUZZ_REPLAY
/* ---- Replay mode ---------------------------------------------------------
 */

static uint64_t fzRng = 0x9E3779B97F4A7C15ull;

static uint64_t fzRand(void)
{
    fzRng ^= fzRng << 13;
    fzRng ^= fzRng >> 7;
    fzRng ^= fzRng << 17;
    return fzRng;
}

static uint8_t *fzReadFile(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    uint8_t *buf = NULL;
    long len;
    if (fp == NULL || fseek(fp, 0, SEEK_END) != 0 || (len = ftell(fp)) < 0) {
        if (fp != NULL) {
            fclose(fp);
        }
        return NULL;
    }
    rewind(fp);
    buf = malloc((size_t)len + 64);
    if (buf != NULL && fread(buf, 1, (size_t)len, fp) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    *n = (size_t)len;
    return buf;
}

/* Flips a bit, sets a u64 to a boundary value, or truncates. */
static size_t fzMutate(uint8_t *buf, size_t n)
{
    static const uint64_t edges[] = {0,  1,  7,     8,          40,
                                     48, 64, 65535, 1ull << 32, UINT64_MAX};
    size_t at = 1 + (n > 1 ? fzRand() % (n - 1) : 0);
    switch (fzRand() % 4) {
        case 0:
            if (at < n) {
                buf[at] ^= (uint8_t)(1u << (fzRand() % 8));
            }
            return n;
        case 1:
            if (at + 8 <= n) {
                tpdbPut64(buf + at, edges[fzRand() % 10]);
            }
            return n;
        case 2:
            buf[0] = (uint8_t)fzRand();
            return n;
        default:
            return at;
    }
}

/* Runs one corpus file: those named valid_* must pass the wire check
 * whole, those named bad_* must be refused. Returns 0 if as expected. */
static int fzExpect(const char *name, const uint8_t *buf, size_t n)
{
    size_t len = 0;
    size_t ok = 0;
    if (n == 0 || (buf[0] & 0x80) != 0) {
        LLVMFuzzerTestOneInput(buf, n);
        return 0;
    }
    fzOne(buf, n, &len, &ok);
    if (strncmp(name, "valid_", 6) == 0 && ok != len) {
        fprintf(stderr, "%s: the wire check passed %zu of %zu bytes\n", name,
                ok, len);
        return -1;
    }
    if (strncmp(name, "bad_", 4) == 0 && ok == len) {
        fprintf(stderr, "%s: the wire check passed it whole\n", name);
        return -1;
    }
    return 0;
}

/* Runs every regular file of dir but *.md, then `mutations` mutations of
 * them; returns how many files ran, or -1 on an unreadable corpus. */
static long fzRunDir(const char *dir, long mutations)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    long count = 0;
    if (d == NULL) {
        fprintf(stderr, "cannot open corpus %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while (count >= 0 && (e = readdir(d)) != NULL) {
        char p[1024];
        struct stat st;
        size_t n = 0;
        size_t len = strlen(e->d_name);
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' ||
            (len > 3 && strcmp(e->d_name + len - 3, ".md") == 0) ||
            stat(p, &st) != 0 || !S_ISREG(st.st_mode)) {
            continue;
        }
        uint8_t *buf = fzReadFile(p, &n);
        if (buf == NULL) {
            fprintf(stderr, "cannot read corpus file %s\n", p);
            count = -1;
            break;
        }
        if (fzExpect(e->d_name, buf, n) != 0) {
            free(buf);
            count = -1;
            break;
        }
        uint8_t *m = malloc(n + 64);
        for (long k = 0; m != NULL && k < mutations; k++) {
            memcpy(m, buf, n);
            size_t mn = n;
            for (int j = 0; j < 1 + (int)(fzRand() % 3); j++) {
                mn = fzMutate(m, mn);
            }
            LLVMFuzzerTestOneInput(m, mn);
        }
        free(m);
        free(buf);
        count++;
    }
    closedir(d);
    return count;
}

int main(int argc, char **argv)
{
    long mutations = 0;
    long total = 0;
    int i = 1;
    if (argc > 2 && strcmp(argv[1], "--mutations") == 0) {
        mutations = strtol(argv[2], NULL, 10);
        i = 3;
    }
    if (i >= argc) {
        fprintf(stderr, "usage: %s [--mutations N] DIR...\n", argv[0]);
        return 2;
    }
    for (; i < argc; i++) {
        long n = fzRunDir(argv[i], mutations);
        if (n <= 0) {
            fprintf(stderr, "corpus %s: %s\n", argv[i],
                    n == 0 ? "empty" : "unreadable");
            return 1;
        }
        total += n;
    }
    printf("replayed %ld inputs, %ld mutations each\n", total, mutations);
    return 0;
}
#endif
