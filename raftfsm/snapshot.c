/*
 * Snapshot codec: every replicated database image, in lz4 chunks of at most
 * 4 MiB of whole pages, each with its own CRC-32C. The layout table is in
 * snapshot.h. Decoding checks the whole buffer (structure and every chunk
 * checksum) before the first callback, so a corrupt snapshot is normally
 * rejected before the caller has replaced any database; each image is then
 * decompressed into one buffer that lives only during its callback.
 */
#include "raftfsm/snapshot.h"

#include <lz4.h>
#include <raft.h>
#include <string.h>

#define SNAP_MAGIC "TPS1"
#define SNAP_VERSION 1
#define SNAP_HDR_SIZE 24
#define SNAP_HDR_CRC_OFF 20
#define SNAP_DB_FIXED 12  /* page_size, db_pages, chunk count */
#define SNAP_CHUNK_HDR 12 /* raw length, compressed length, CRC */
#define SNAP_CHUNK_MAX (4u << 20)
#define PAGE_SIZE_MIN 512
#define PAGE_SIZE_MAX 65536
/* lz4 cannot expand data by more than about 255 times. */
#define LZ4_MAX_RATIO 256
#define LZ4_RATIO_SLACK 64

/* A read position in the buffer being decoded. */
struct cursor {
    const uint8_t *p;
    size_t len;
    size_t off;
};

/* One database as found in the buffer. */
struct snapDb {
    char name[256];
    uint32_t page_size;
    uint32_t db_pages;
    uint32_t n_chunks;
    size_t chunks_off; /* offset of the first chunk header */
};

static int validPageSize(uint32_t v)
{
    return v >= PAGE_SIZE_MIN && v <= PAGE_SIZE_MAX && (v & (v - 1)) == 0;
}

static uint32_t pagesPerChunk(uint32_t page_size)
{
    return SNAP_CHUNK_MAX / page_size;
}

/* Returns a pointer to the next n bytes and advances, or NULL if the buffer
 * holds fewer. */
static const uint8_t *take(struct cursor *c, size_t n)
{
    const uint8_t *at;
    if (n > c->len - c->off) {
        return NULL;
    }
    at = c->p + c->off;
    c->off += n;
    return at;
}

/* Checks one encoder input and returns its worst-case encoded size. */
static int checkDb(const struct tpdb_snapshot_db *db,
                   unsigned i,
                   uint64_t *bound,
                   char *errmsg)
{
    size_t name_len = db->name ? strnlen(db->name, 256) : 0;
    uint32_t ppc, n_chunks;
    if (name_len == 0 || name_len > 255) {
        tpdbErrf(errmsg, "encode snapshot: database %u: bad name", i);
        return TPDB_INVALID;
    }
    if (!validPageSize(db->page_size) ||
        (db->db_pages > 0 && db->image == NULL)) {
        tpdbErrf(errmsg, "encode snapshot: %s: bad page size %u or no image",
                 db->name, (unsigned)db->page_size);
        return TPDB_INVALID;
    }
    ppc = pagesPerChunk(db->page_size);
    n_chunks = db->db_pages / ppc + (db->db_pages % ppc != 0);
    *bound += 2 + name_len + SNAP_DB_FIXED +
              (uint64_t)n_chunks *
                  (SNAP_CHUNK_HDR + LZ4_COMPRESSBOUND(SNAP_CHUNK_MAX));
    return TPDB_OK;
}

/* Appends one database at out + *off; out has room for the bound. */
static int encodeDb(const struct tpdb_snapshot_db *db,
                    uint8_t *out,
                    size_t *off,
                    char *errmsg)
{
    size_t name_len = strlen(db->name);
    uint32_t ppc = pagesPerChunk(db->page_size);
    uint8_t *p = out + *off;
    uint32_t n_chunks = 0;
    uint8_t *count_at;

    tpdbPut16(p, (uint16_t)name_len);
    memcpy(p + 2, db->name, name_len);
    p += 2 + name_len;
    tpdbPut32(p, db->page_size);
    tpdbPut32(p + 4, db->db_pages);
    count_at = p + 8;
    p += SNAP_DB_FIXED;
    for (uint32_t pg = 0; pg < db->db_pages; pg += ppc) {
        uint32_t n = db->db_pages - pg < ppc ? db->db_pages - pg : ppc;
        int raw_len = (int)(n * db->page_size);
        int comp = LZ4_compress_default(
            (const char *)db->image + (size_t)pg * db->page_size,
            (char *)p + SNAP_CHUNK_HDR, raw_len, LZ4_compressBound(raw_len));
        if (comp <= 0) {
            tpdbErrf(errmsg, "encode snapshot: %s: lz4 failed", db->name);
            return TPDB_INVALID;
        }
        tpdbPut32(p, (uint32_t)raw_len);
        tpdbPut32(p + 4, (uint32_t)comp);
        tpdbPut32(p + 8, tpdbCrc32c(0, p + SNAP_CHUNK_HDR, (size_t)comp));
        p += SNAP_CHUNK_HDR + (size_t)comp;
        n_chunks++;
    }
    tpdbPut32(count_at, n_chunks);
    *off = (size_t)(p - out);
    return TPDB_OK;
}

int tpdbSnapshotEncode(uint64_t applied,
                       const struct tpdb_snapshot_db *dbs,
                       unsigned n_dbs,
                       void **buf,
                       size_t *len,
                       char *errmsg)
{
    uint64_t bound = SNAP_HDR_SIZE;
    uint8_t *out, *shrunk;
    size_t off = SNAP_HDR_SIZE;
    int rc;

    if (n_dbs > 0 && dbs == NULL) {
        tpdbErrf(errmsg, "encode snapshot: NULL database list");
        return TPDB_INVALID;
    }
    for (unsigned i = 0; i < n_dbs; i++) {
        rc = checkDb(&dbs[i], i, &bound, errmsg);
        if (rc != TPDB_OK) {
            return rc;
        }
    }
    if (bound > SIZE_MAX) {
        tpdbErrf(errmsg, "encode snapshot: too large");
        return TPDB_INVALID;
    }
    out = raft_malloc((size_t)bound);
    if (out == NULL) {
        tpdbErrf(errmsg, "encode snapshot: no memory for %llu bytes",
                 (unsigned long long)bound);
        return TPDB_NOMEM;
    }
    memcpy(out, SNAP_MAGIC, 4);
    tpdbPut32(out + 4, SNAP_VERSION);
    tpdbPut64(out + 8, applied);
    tpdbPut32(out + 16, n_dbs);
    tpdbPut32(out + SNAP_HDR_CRC_OFF, tpdbCrc32c(0, out, SNAP_HDR_CRC_OFF));
    for (unsigned i = 0; i < n_dbs; i++) {
        rc = encodeDb(&dbs[i], out, &off, errmsg);
        if (rc != TPDB_OK) {
            raft_free(out);
            return rc;
        }
    }
    shrunk = raft_realloc(out, off);
    *buf = shrunk != NULL ? shrunk : out;
    *len = off;
    return TPDB_OK;
}

/* Checks one chunk header and its checksum; adds its raw length to *raw. */
static int scanChunk(struct cursor *c,
                     const struct snapDb *db,
                     uint32_t i,
                     int verify,
                     uint64_t *raw,
                     char *errmsg)
{
    const uint8_t *h = take(c, SNAP_CHUNK_HDR);
    const uint8_t *data;
    uint32_t raw_len, comp_len;
    if (h == NULL) {
        tpdbErrf(errmsg, "%s: chunk %u: truncated header", db->name, i);
        return TPDB_CORRUPT;
    }
    raw_len = tpdbGet32(h);
    comp_len = tpdbGet32(h + 4);
    if (raw_len == 0 || raw_len > SNAP_CHUNK_MAX ||
        raw_len % db->page_size != 0 || comp_len == 0 ||
        comp_len > (uint32_t)LZ4_compressBound((int)raw_len) ||
        (uint64_t)comp_len * LZ4_MAX_RATIO + LZ4_RATIO_SLACK < raw_len) {
        tpdbErrf(errmsg, "%s: chunk %u: bad lengths %u/%u", db->name, i,
                 (unsigned)raw_len, (unsigned)comp_len);
        return TPDB_CORRUPT;
    }
    data = take(c, comp_len);
    if (data == NULL) {
        tpdbErrf(errmsg, "%s: chunk %u: truncated", db->name, i);
        return TPDB_CORRUPT;
    }
    if (verify && tpdbCrc32c(0, data, comp_len) != tpdbGet32(h + 8)) {
        tpdbErrf(errmsg, "%s: chunk %u: checksum mismatch", db->name, i);
        return TPDB_CORRUPT;
    }
    *raw += raw_len;
    return TPDB_OK;
}

/* Reads a u16 length and that many name bytes: 1..255 bytes, no NUL. */
static int readName(struct cursor *c, char name[256], char *errmsg)
{
    const uint8_t *p = take(c, 2);
    const uint8_t *bytes = NULL;
    uint32_t n = p != NULL ? tpdbGet16(p) : 0;
    if (n >= 1 && n <= 255) {
        bytes = take(c, n);
    }
    if (bytes == NULL || memchr(bytes, 0, n) != NULL) {
        tpdbErrf(errmsg, "bad or truncated database name");
        return TPDB_CORRUPT;
    }
    memcpy(name, bytes, n);
    name[n] = '\0';
    return TPDB_OK;
}

/* Parses one database's header and checks all its chunks, and their
 * checksums if `verify`. */
static int scanDb(struct cursor *c, struct snapDb *db, int verify, char *errmsg)
{
    const uint8_t *p;
    uint64_t raw = 0;
    int rc = readName(c, db->name, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    p = take(c, SNAP_DB_FIXED);
    if (p == NULL || !validPageSize(tpdbGet32(p))) {
        tpdbErrf(errmsg, "%s: truncated header or bad page size", db->name);
        return TPDB_CORRUPT;
    }
    db->page_size = tpdbGet32(p);
    db->db_pages = tpdbGet32(p + 4);
    db->n_chunks = tpdbGet32(p + 8);
    db->chunks_off = c->off;
    for (uint32_t i = 0; i < db->n_chunks; i++) {
        rc = scanChunk(c, db, i, verify, &raw, errmsg);
        if (rc != TPDB_OK) {
            return rc;
        }
    }
    if (raw != (uint64_t)db->page_size * db->db_pages) {
        tpdbErrf(errmsg, "%s: chunks hold %llu bytes, not %u pages", db->name,
                 (unsigned long long)raw, (unsigned)db->db_pages);
        return TPDB_CORRUPT;
    }
    return TPDB_OK;
}

/* Decompresses a scanned database into a new image and hands it to cb. */
static int restoreDb(const struct cursor *whole,
                     const struct snapDb *db,
                     tpdb_snapshot_db_cb cb,
                     void *arg,
                     char *errmsg)
{
    size_t size = (size_t)db->page_size * db->db_pages;
    struct cursor c = {whole->p, whole->len, db->chunks_off};
    struct tpdb_snapshot_db out = {db->name, db->page_size, db->db_pages, NULL};
    uint8_t *image = NULL;
    size_t at = 0;
    int rc;

    if (size > 0 && (image = tpdb_malloc(size)) == NULL) {
        tpdbErrf(errmsg, "%s: no memory for a %zu-byte image", db->name, size);
        return TPDB_NOMEM;
    }
    for (uint32_t i = 0; i < db->n_chunks; i++) {
        const uint8_t *h = take(&c, SNAP_CHUNK_HDR);
        uint32_t raw_len = tpdbGet32(h), comp_len = tpdbGet32(h + 4);
        int n = LZ4_decompress_safe((const char *)take(&c, comp_len),
                                    (char *)image + at, (int)comp_len,
                                    (int)raw_len);
        if (n < 0 || (uint32_t)n != raw_len) {
            tpdbErrf(errmsg, "%s: chunk %u: lz4 data corrupt", db->name, i);
            rc = TPDB_CORRUPT;
            goto out;
        }
        at += raw_len;
    }
    out.image = image;
    rc = cb(arg, &out, errmsg);
out:
    tpdb_free(image);
    return rc;
}

/* Checks the header and returns the database count. */
static int scanHeader(struct cursor *c,
                      uint64_t *applied,
                      uint32_t *n_dbs,
                      char *errmsg)
{
    const uint8_t *h = take(c, SNAP_HDR_SIZE);
    if (h == NULL || memcmp(h, SNAP_MAGIC, 4) != 0 ||
        tpdbGet32(h + SNAP_HDR_CRC_OFF) != tpdbCrc32c(0, h, SNAP_HDR_CRC_OFF) ||
        tpdbGet32(h + 4) != SNAP_VERSION) {
        tpdbErrf(errmsg, "bad or truncated header");
        return TPDB_CORRUPT;
    }
    *applied = tpdbGet64(h + 8);
    *n_dbs = tpdbGet32(h + 16);
    return TPDB_OK;
}

int tpdbSnapshotDecode(const void *buf,
                       size_t len,
                       uint64_t *applied,
                       tpdb_snapshot_db_cb cb,
                       void *arg,
                       char *errmsg)
{
    struct cursor c = {buf, buf != NULL ? len : 0, 0};
    struct snapDb db;
    uint64_t index;
    uint32_t n_dbs;
    int rc;

    rc = scanHeader(&c, &index, &n_dbs, errmsg);
    /* First pass: structure and checksums only, nothing allocated. */
    for (uint32_t i = 0; rc == TPDB_OK && i < n_dbs; i++) {
        rc = scanDb(&c, &db, 1, errmsg);
    }
    if (rc == TPDB_OK && c.off != c.len) {
        tpdbErrf(errmsg, "%zu bytes after the last database", c.len - c.off);
        rc = TPDB_CORRUPT;
    }
    if (rc != TPDB_OK) {
        tpdbErrWrap(errmsg, "decode snapshot");
        return rc;
    }
    c.off = SNAP_HDR_SIZE;
    for (uint32_t i = 0; i < n_dbs; i++) {
        rc = scanDb(&c, &db, 0, errmsg);
        if (rc == TPDB_OK) {
            rc = restoreDb(&c, &db, cb, arg, errmsg);
        }
        if (rc != TPDB_OK) {
            tpdbErrWrap(errmsg, "decode snapshot: database %u", (unsigned)i);
            return rc;
        }
    }
    *applied = index;
    return TPDB_OK;
}
