/*
 * Raft log entry codec: one committed transaction of one database as a
 * checksummed lz4 block, padded to a multiple of 8 bytes. The layout table is
 * in entry.h. Decoding treats the buffer as hostile: every length is checked
 * against the buffer and against the others before anything is read or
 * allocated, so a corrupt entry yields TPDB_CORRUPT and never a crash.
 * The payload CRC also covers the database name, so that a damaged name
 * cannot send a transaction to another database.
 */
#include "raftfsm/entry.h"

#include <lz4.h>
#include <raft.h>
#include <string.h>

#define ENTRY_MAGIC "TPE1"
#define ENTRY_VERSION 1
#define ENTRY_HDR_SIZE 56
#define ENTRY_HDR_CRC_OFF 52
#define PAGE_SIZE_MIN 512
#define PAGE_SIZE_MAX 65536
/* TPDB_ENTRY_TPDBFILE entries carry 4096-byte TPDB pages (tpdbfile.h). */
#define TPDB_TPDBFILE_PAGE 4096
/* lz4 cannot expand data by more than about 255 times; a header claiming
 * more is corrupt, and rejecting it avoids a huge allocation. */
#define LZ4_MAX_RATIO 256
#define LZ4_RATIO_SLACK 64

/* The fixed header, decoded into host integers. */
struct entryHeader {
    int type;
    unsigned flags;
    uint64_t origin;
    uint64_t seq;
    uint32_t page_size;
    uint32_t db_pages;
    uint32_t n_pages;
    uint32_t raw_len;
    uint32_t comp_len;
    uint32_t name_len;
    uint32_t payload_crc;
};

static uint64_t pad8(uint64_t n)
{
    return (n + 7) & ~(uint64_t)7;
}

static int isPowerOfTwo(uint32_t v)
{
    return v != 0 && (v & (v - 1)) == 0;
}

/* Checks the shape of a page list that does not depend on the pages
 * themselves. On failure fills errmsg and returns TPDB_CORRUPT (the caller
 * turns it into its own code). *raw_len gets n_pages * (4 + page_size). */
static int checkShape(int type,
                      uint32_t page_size,
                      uint32_t db_pages,
                      uint32_t n_pages,
                      uint64_t *raw_len,
                      char *errmsg)
{
    if (type < TPDB_ENTRY_TXN || type > TPDB_ENTRY_TPDBFILE_DELTA) {
        tpdbErrf(errmsg, "unknown entry type %d", type);
        return TPDB_CORRUPT;
    }
    if (!isPowerOfTwo(page_size) || page_size < PAGE_SIZE_MIN ||
        page_size > PAGE_SIZE_MAX) {
        tpdbErrf(errmsg, "bad page size %u", (unsigned)page_size);
        return TPDB_CORRUPT;
    }
    if (n_pages == 0 || n_pages > db_pages) {
        tpdbErrf(errmsg, "bad page count %u for %u database pages",
                 (unsigned)n_pages, (unsigned)db_pages);
        return TPDB_CORRUPT;
    }
    if ((type == TPDB_ENTRY_TPDBFILE || type == TPDB_ENTRY_TPDBFILE_BEGIN ||
         type == TPDB_ENTRY_TPDBFILE_DELTA) &&
        page_size != TPDB_TPDBFILE_PAGE) {
        tpdbErrf(errmsg, "TPDB file entry with page size %u",
                 (unsigned)page_size);
        return TPDB_CORRUPT;
    }
    if (type == TPDB_ENTRY_IMAGE && n_pages != db_pages) {
        tpdbErrf(errmsg, "image of %u pages holds %u pages", (unsigned)db_pages,
                 (unsigned)n_pages);
        return TPDB_CORRUPT;
    }
    *raw_len = (uint64_t)n_pages * (4 + (uint64_t)page_size);
    return TPDB_OK;
}

/* Checks page number i (value pgno) given the previous one. */
static int checkPgno(int type,
                     uint32_t i,
                     uint32_t pgno,
                     uint32_t prev,
                     uint32_t db_pages,
                     char *errmsg)
{
    if (pgno == 0 || pgno > db_pages) {
        tpdbErrf(errmsg, "page %u: number %u out of range 1..%u", (unsigned)i,
                 (unsigned)pgno, (unsigned)db_pages);
        return TPDB_CORRUPT;
    }
    if (i > 0 && pgno <= prev) {
        tpdbErrf(errmsg, "page %u: number %u not above %u", (unsigned)i,
                 (unsigned)pgno, (unsigned)prev);
        return TPDB_CORRUPT;
    }
    if ((type == TPDB_ENTRY_TPDBFILE || type == TPDB_ENTRY_TPDBFILE_BEGIN ||
         type == TPDB_ENTRY_TPDBFILE_DELTA) &&
        i == 0 && pgno != 1) {
        tpdbErrf(errmsg, "TPDB file entry without its header page");
        return TPDB_CORRUPT;
    }
    if (type == TPDB_ENTRY_IMAGE && pgno != i + 1) {
        tpdbErrf(errmsg, "image page %u has number %u", (unsigned)i,
                 (unsigned)pgno);
        return TPDB_CORRUPT;
    }
    return TPDB_OK;
}

/* Validates encoder input; returns TPDB_INVALID or TPDB_TOOBIG. */
int tpdbDbNameValid(const char *name)
{
    size_t n = name != NULL ? strnlen(name, TPDB_DBNAME_MAX + 1) : 0;
    return n > 0 && n <= TPDB_DBNAME_MAX && name[0] != '.' &&
           memchr(name, '/', n) == NULL;
}

static int checkInput(int type,
                      const char *db,
                      const struct tpdb_txn *txn,
                      size_t *name_len,
                      uint64_t *raw_len,
                      char *errmsg)
{
    if (db == NULL || txn == NULL) {
        tpdbErrf(errmsg, "encode entry: NULL database name or transaction");
        return TPDB_INVALID;
    }
    *name_len = strnlen(db, TPDB_DBNAME_MAX + 1);
    if (!tpdbDbNameValid(db)) {
        tpdbErrf(errmsg,
                 "encode entry: database name '%.*s' not allowed (1..%d "
                 "bytes, not starting with '.', no '/')",
                 TPDB_DBNAME_MAX, db, TPDB_DBNAME_MAX);
        return TPDB_INVALID;
    }
    if (txn->pages == NULL) {
        tpdbErrf(errmsg, "encode entry for %s: NULL page list", db);
        return TPDB_INVALID;
    }
    if (checkShape(type, txn->page_size, txn->db_pages, txn->n_pages, raw_len,
                   errmsg) != TPDB_OK) {
        tpdbErrWrap(errmsg, "encode entry for %s", db);
        return TPDB_INVALID;
    }
    for (uint32_t i = 0; i < txn->n_pages; i++) {
        const struct tpdb_page *pg = &txn->pages[i];
        uint32_t prev = i > 0 ? txn->pages[i - 1].pgno : 0;
        if (pg->data == NULL) {
            tpdbErrf(errmsg, "encode entry for %s: page %u: NULL data", db,
                     (unsigned)i);
            return TPDB_INVALID;
        }
        if (checkPgno(type, i, pg->pgno, prev, txn->db_pages, errmsg) !=
            TPDB_OK) {
            tpdbErrWrap(errmsg, "encode entry for %s", db);
            return TPDB_INVALID;
        }
    }
    if (*raw_len > LZ4_MAX_INPUT_SIZE) {
        tpdbErrf(errmsg, "encode entry for %s: payload of %llu bytes over %d",
                 db, (unsigned long long)*raw_len, LZ4_MAX_INPUT_SIZE);
        return TPDB_TOOBIG;
    }
    return TPDB_OK;
}

static void writeHeader(uint8_t *p, const struct entryHeader *h)
{
    memcpy(p, ENTRY_MAGIC, 4);
    p[4] = ENTRY_VERSION;
    p[5] = (uint8_t)h->type;
    tpdbPut16(p + 6, 0);
    tpdbPut64(p + 8, h->origin);
    tpdbPut64(p + 16, h->seq);
    tpdbPut32(p + 24, h->page_size);
    tpdbPut32(p + 28, h->db_pages);
    tpdbPut32(p + 32, h->n_pages);
    tpdbPut32(p + 36, h->raw_len);
    tpdbPut32(p + 40, h->comp_len);
    tpdbPut16(p + 44, (uint16_t)h->name_len);
    tpdbPut16(p + 46, 0);
    tpdbPut32(p + 48, h->payload_crc);
    tpdbPut32(p + ENTRY_HDR_CRC_OFF, tpdbCrc32c(0, p, ENTRY_HDR_CRC_OFF));
}

/* Lays the pages out as [u32 pgno][page bytes] * n. */
static void fillRaw(uint8_t *raw, const struct tpdb_txn *txn)
{
    uint8_t *p = raw;
    for (uint32_t i = 0; i < txn->n_pages; i++) {
        tpdbPut32(p, txn->pages[i].pgno);
        memcpy(p + 4, txn->pages[i].data, txn->page_size);
        p += 4 + (size_t)txn->page_size;
    }
}

/* Compresses raw into a new raft_malloc'd entry buffer and fills in h. */
static int compressEntry(const uint8_t *raw,
                         const char *db,
                         struct entryHeader *h,
                         void **buf,
                         size_t *len,
                         char *errmsg)
{
    int bound = LZ4_compressBound((int)h->raw_len);
    size_t cap = (size_t)pad8(ENTRY_HDR_SIZE + h->name_len + (size_t)bound);
    size_t total;
    uint8_t *out = raft_malloc(cap);
    uint8_t *shrunk;
    int comp;

    if (out == NULL) {
        tpdbErrf(errmsg, "encode entry for %s: no memory for %zu bytes", db,
                 cap);
        return TPDB_NOMEM;
    }
    memcpy(out + ENTRY_HDR_SIZE, db, h->name_len);
    comp = LZ4_compress_default((const char *)raw,
                                (char *)out + ENTRY_HDR_SIZE + h->name_len,
                                (int)h->raw_len, bound);
    if (comp <= 0) {
        raft_free(out);
        tpdbErrf(errmsg, "encode entry for %s: lz4 compression failed", db);
        return TPDB_INVALID;
    }
    h->comp_len = (uint32_t)comp;
    h->payload_crc =
        tpdbCrc32c(0, out + ENTRY_HDR_SIZE, h->name_len + h->comp_len);
    writeHeader(out, h);
    total = (size_t)pad8(ENTRY_HDR_SIZE + h->name_len + h->comp_len);
    memset(out + ENTRY_HDR_SIZE + h->name_len + h->comp_len, 0,
           total - (ENTRY_HDR_SIZE + h->name_len + h->comp_len));
    /* Give back the unused part of the compression bound: entries stay in
     * raft's in-memory log for a while. */
    shrunk = raft_realloc(out, total);
    *buf = shrunk != NULL ? shrunk : out;
    *len = total;
    return TPDB_OK;
}

int tpdbEntryEncode(int type,
                    const char *db,
                    uint64_t origin,
                    uint64_t seq,
                    const struct tpdb_txn *txn,
                    void **buf,
                    size_t *len,
                    char *errmsg)
{
    struct entryHeader h;
    size_t name_len;
    uint64_t raw_len;
    uint8_t *raw;
    int rc;

    rc = checkInput(type, db, txn, &name_len, &raw_len, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    raw = tpdb_malloc((size_t)raw_len);
    if (raw == NULL) {
        tpdbErrf(errmsg, "encode entry for %s: no memory for %llu bytes", db,
                 (unsigned long long)raw_len);
        return TPDB_NOMEM;
    }
    fillRaw(raw, txn);
    memset(&h, 0, sizeof h);
    h.type = type;
    h.origin = origin;
    h.seq = seq;
    h.page_size = txn->page_size;
    h.db_pages = txn->db_pages;
    h.n_pages = txn->n_pages;
    h.raw_len = (uint32_t)raw_len;
    h.name_len = (uint32_t)name_len;
    rc = compressEntry(raw, db, &h, buf, len, errmsg);
    tpdb_free(raw);
    return rc;
}

/* Parses and checks the fixed header, the name and the total length. */
static int parseHeader(const uint8_t *p,
                       size_t len,
                       struct entryHeader *h,
                       char *errmsg)
{
    uint64_t raw_len;
    if (len < ENTRY_HDR_SIZE) {
        tpdbErrf(errmsg, "entry of %zu bytes shorter than its header", len);
        return TPDB_CORRUPT;
    }
    if (memcmp(p, ENTRY_MAGIC, 4) != 0) {
        tpdbErrf(errmsg, "bad entry magic");
        return TPDB_CORRUPT;
    }
    if (tpdbGet32(p + ENTRY_HDR_CRC_OFF) !=
        tpdbCrc32c(0, p, ENTRY_HDR_CRC_OFF)) {
        tpdbErrf(errmsg, "entry header checksum mismatch");
        return TPDB_CORRUPT;
    }
    if (p[4] != ENTRY_VERSION || tpdbGet16(p + 6) != 0 ||
        tpdbGet16(p + 46) != 0) {
        tpdbErrf(errmsg, "unsupported entry version %u or flags",
                 (unsigned)p[4]);
        return TPDB_CORRUPT;
    }
    h->type = p[5];
    h->origin = tpdbGet64(p + 8);
    h->seq = tpdbGet64(p + 16);
    h->page_size = tpdbGet32(p + 24);
    h->db_pages = tpdbGet32(p + 28);
    h->n_pages = tpdbGet32(p + 32);
    h->raw_len = tpdbGet32(p + 36);
    h->comp_len = tpdbGet32(p + 40);
    h->name_len = tpdbGet16(p + 44);
    h->payload_crc = tpdbGet32(p + 48);
    if (checkShape(h->type, h->page_size, h->db_pages, h->n_pages, &raw_len,
                   errmsg) != TPDB_OK) {
        return TPDB_CORRUPT;
    }
    if (raw_len != h->raw_len || raw_len > LZ4_MAX_INPUT_SIZE) {
        tpdbErrf(errmsg, "payload length %u, expected %llu",
                 (unsigned)h->raw_len, (unsigned long long)raw_len);
        return TPDB_CORRUPT;
    }
    if (h->comp_len == 0 ||
        h->comp_len > (uint32_t)LZ4_compressBound((int)h->raw_len) ||
        (uint64_t)h->comp_len * LZ4_MAX_RATIO + LZ4_RATIO_SLACK < h->raw_len) {
        tpdbErrf(errmsg, "compressed length %u implausible for %u bytes",
                 (unsigned)h->comp_len, (unsigned)h->raw_len);
        return TPDB_CORRUPT;
    }
    return TPDB_OK;
}

/* Checks the name and that the buffer is exactly header, name, payload and
 * zero padding. */
static int checkBody(const uint8_t *p,
                     size_t len,
                     const struct entryHeader *h,
                     char *errmsg)
{
    uint64_t used = ENTRY_HDR_SIZE + (uint64_t)h->name_len + h->comp_len;
    if (h->name_len == 0 || h->name_len > TPDB_DBNAME_MAX) {
        tpdbErrf(errmsg, "bad database name length %u", (unsigned)h->name_len);
        return TPDB_CORRUPT;
    }
    if ((uint64_t)len != pad8(used)) {
        tpdbErrf(errmsg, "entry of %zu bytes, header says %llu", len,
                 (unsigned long long)pad8(used));
        return TPDB_CORRUPT;
    }
    if (memchr(p + ENTRY_HDR_SIZE, 0, h->name_len) != NULL) {
        tpdbErrf(errmsg, "database name holds a NUL byte");
        return TPDB_CORRUPT;
    }
    for (uint64_t i = used; i < len; i++) {
        if (p[i] != 0) {
            tpdbErrf(errmsg, "non-zero padding");
            return TPDB_CORRUPT;
        }
    }
    return TPDB_OK;
}

int tpdbEntryPeek(const void *buf,
                  size_t len,
                  struct tpdb_entry *e,
                  char *errmsg)
{
    const uint8_t *p = buf;
    struct entryHeader h;
    int rc;

    memset(e, 0, sizeof *e);
    if (p == NULL) {
        len = 0;
    }
    rc = parseHeader(p, len, &h, errmsg);
    if (rc == TPDB_OK) {
        rc = checkBody(p, len, &h, errmsg);
    }
    if (rc != TPDB_OK) {
        tpdbErrWrap(errmsg, "decode entry");
        return rc;
    }
    e->type = h.type;
    e->origin = h.origin;
    e->seq = h.seq;
    memcpy(e->db, p + ENTRY_HDR_SIZE, h.name_len);
    e->db[h.name_len] = '\0';
    e->txn.page_size = h.page_size;
    e->txn.db_pages = h.db_pages;
    e->txn.n_pages = h.n_pages;
    return TPDB_OK;
}

/* Points the page list at the decompressed payload, checking page numbers. */
static int splitPages(struct tpdb_entry *e, const uint8_t *raw, char *errmsg)
{
    struct tpdb_txn *txn = &e->txn;
    const uint8_t *p = raw;
    uint32_t prev = 0;
    for (uint32_t i = 0; i < txn->n_pages; i++) {
        uint32_t pgno = tpdbGet32(p);
        if (checkPgno(e->type, i, pgno, prev, txn->db_pages, errmsg) !=
            TPDB_OK) {
            return TPDB_CORRUPT;
        }
        txn->pages[i].pgno = pgno;
        txn->pages[i].data = p + 4;
        prev = pgno;
        p += 4 + (size_t)txn->page_size;
    }
    return TPDB_OK;
}

int tpdbEntryDecode(const void *buf,
                    size_t len,
                    struct tpdb_entry *e,
                    char *errmsg)
{
    const uint8_t *p = buf;
    size_t list_size, raw_len;
    uint32_t comp_len, name_len;
    uint8_t *raw;
    int rc, n;

    rc = tpdbEntryPeek(buf, len, e, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    name_len = tpdbGet16(p + 44);
    comp_len = tpdbGet32(p + 40);
    if (tpdbCrc32c(0, p + ENTRY_HDR_SIZE, (size_t)name_len + comp_len) !=
        tpdbGet32(p + 48)) {
        tpdbErrf(errmsg, "decode entry: payload checksum mismatch");
        rc = TPDB_CORRUPT;
        goto err;
    }
    /* One allocation holds the page list, then the raw payload. */
    list_size = (size_t)e->txn.n_pages * sizeof(struct tpdb_page);
    raw_len = (size_t)e->txn.n_pages * (4 + (size_t)e->txn.page_size);
    e->payload = tpdb_malloc(list_size + raw_len);
    if (e->payload == NULL) {
        tpdbErrf(errmsg, "decode entry: no memory for %zu bytes",
                 list_size + raw_len);
        rc = TPDB_NOMEM;
        goto err;
    }
    e->txn.pages = e->payload;
    raw = (uint8_t *)e->payload + list_size;
    n = LZ4_decompress_safe((const char *)p + ENTRY_HDR_SIZE + name_len,
                            (char *)raw, (int)comp_len, (int)raw_len);
    if (n < 0 || (size_t)n != raw_len) {
        tpdbErrf(errmsg,
                 "decode entry: lz4 payload decompressed to %d of "
                 "%zu bytes",
                 n, raw_len);
        rc = TPDB_CORRUPT;
        goto err_after_alloc;
    }
    rc = splitPages(e, raw, errmsg);
    if (rc != TPDB_OK) {
        tpdbErrWrap(errmsg, "decode entry");
        goto err_after_alloc;
    }
    return TPDB_OK;

err_after_alloc:
    tpdbEntryRelease(e);
err:
    return rc;
}

void tpdbEntryRelease(struct tpdb_entry *e)
{
    if (e == NULL) {
        return;
    }
    tpdb_free(e->payload);
    e->payload = NULL;
    e->txn.pages = NULL;
}
