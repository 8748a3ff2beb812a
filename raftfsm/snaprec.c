/*
 * Snapshot record codec (layout in snaprec.h).
 */
#include "raftfsm/snaprec.h"

#include <raft.h>
#include <string.h>

#define REC_MAGIC "TPS2"
#define REC_VERSION 1
#define REC_HDR 24
#define REC_DB_FIXED 16 /* kind, reserved, page_size, db_pages, image len */
#define REC_NAME_MAX 255

int tpdbSnaprecIs(const void *buf, size_t len)
{
    return buf != NULL && len >= 4 && memcmp(buf, REC_MAGIC, 4) == 0;
}

static int dbCheck(const struct tpdb_snaprec_db *db, char *errmsg)
{
    size_t n = strnlen(db->name, sizeof db->name);
    if (n == 0 || n > REC_NAME_MAX) {
        tpdbErrf(errmsg, "snapshot record: bad database name");
        return TPDB_INVALID;
    }
    if (db->kind == TPDB_SNAPREC_TPDBFILE && db->db_pages > 0 &&
        db->image == NULL) {
        tpdbErrf(errmsg, "snapshot record: %s has no image", db->name);
        return TPDB_INVALID;
    }
    if (db->kind != TPDB_SNAPREC_SQLITE && db->kind != TPDB_SNAPREC_TPDBFILE &&
        db->kind != TPDB_SNAPREC_TPDBREF) {
        tpdbErrf(errmsg, "snapshot record: %s has kind %d", db->name, db->kind);
        return TPDB_INVALID;
    }
    return TPDB_OK;
}

static size_t imageLen(const struct tpdb_snaprec_db *db)
{
    return db->kind == TPDB_SNAPREC_TPDBFILE
               ? (size_t)db->db_pages * db->page_size
               : 0;
}

int tpdbSnaprecEncode(uint64_t index,
                      const struct tpdb_snaprec_db *dbs,
                      unsigned n_dbs,
                      void **buf,
                      size_t *len,
                      char *errmsg)
{
    size_t total = REC_HDR + 4;
    for (unsigned i = 0; i < n_dbs; i++) {
        int rc = dbCheck(&dbs[i], errmsg);
        if (rc != TPDB_OK) {
            return rc;
        }
        total += 2 + strlen(dbs[i].name) + REC_DB_FIXED + imageLen(&dbs[i]);
    }
    uint8_t *p = raft_malloc(total);
    if (p == NULL) {
        tpdbErrf(errmsg, "snapshot record: out of memory");
        return TPDB_NOMEM;
    }
    memcpy(p, REC_MAGIC, 4);
    tpdbPut32(p + 4, REC_VERSION);
    tpdbPut64(p + 8, index);
    tpdbPut32(p + 16, n_dbs);
    tpdbPut32(p + 20, 0);
    size_t off = REC_HDR;
    for (unsigned i = 0; i < n_dbs; i++) {
        const struct tpdb_snaprec_db *db = &dbs[i];
        size_t n = strlen(db->name);
        size_t img = imageLen(db);
        tpdbPut16(p + off, (uint16_t)n);
        memcpy(p + off + 2, db->name, n);
        off += 2 + n;
        p[off] = (uint8_t)db->kind;
        p[off + 1] = 0;
        tpdbPut16(p + off + 2, 0);
        tpdbPut32(p + off + 4, db->page_size);
        tpdbPut32(p + off + 8, db->db_pages);
        tpdbPut32(p + off + 12, (uint32_t)img);
        off += REC_DB_FIXED;
        if (img > 0) {
            memcpy(p + off, db->image, img);
            off += img;
        }
    }
    tpdbPut32(p + off, tpdbCrc32c(0, p, off));
    *buf = p;
    *len = total;
    return TPDB_OK;
}

/* Decodes database i at *off; advances *off. */
static int decodeDb(const uint8_t *p,
                    size_t end,
                    size_t *off,
                    struct tpdb_snaprec_db *db,
                    char *errmsg)
{
    size_t o = *off;
    if (end - o < 2) {
        goto truncated;
    }
    size_t n = tpdbGet16(p + o);
    if (n == 0 || n > REC_NAME_MAX || end - o - 2 < n + REC_DB_FIXED) {
        goto truncated;
    }
    memcpy(db->name, p + o + 2, n);
    db->name[n] = '\0';
    o += 2 + n;
    db->kind = p[o];
    db->page_size = tpdbGet32(p + o + 4);
    db->db_pages = tpdbGet32(p + o + 8);
    uint32_t img = tpdbGet32(p + o + 12);
    o += REC_DB_FIXED;
    db->image = img > 0 ? p + o : NULL;
    if (memchr(db->name, '\0', n) != NULL || dbCheck(db, errmsg) != TPDB_OK ||
        img != imageLen(db) || end - o < img) {
        tpdbErrf(errmsg, "snapshot record: database '%s' is malformed",
                 db->name);
        return TPDB_CORRUPT;
    }
    *off = o + img;
    return TPDB_OK;
truncated:
    tpdbErrf(errmsg, "snapshot record: truncated database entry");
    return TPDB_CORRUPT;
}

int tpdbSnaprecDecode(const void *buf,
                      size_t len,
                      uint64_t *index,
                      struct tpdb_snaprec_db **dbs,
                      unsigned *n_dbs,
                      char *errmsg)
{
    const uint8_t *p = buf;
    *dbs = NULL;
    *n_dbs = 0;
    if (p == NULL || len < REC_HDR + 4 || memcmp(p, REC_MAGIC, 4) != 0 ||
        tpdbGet32(p + 4) != REC_VERSION) {
        tpdbErrf(errmsg, "snapshot record: bad or truncated header");
        return TPDB_CORRUPT;
    }
    size_t end = len - 4;
    if (tpdbGet32(p + end) != tpdbCrc32c(0, p, end)) {
        tpdbErrf(errmsg, "snapshot record: checksum mismatch");
        return TPDB_CORRUPT;
    }
    uint32_t n = tpdbGet32(p + 16);
    if (n > (end - REC_HDR) / (2 + 1 + REC_DB_FIXED)) {
        tpdbErrf(errmsg, "snapshot record: %u databases cannot fit", n);
        return TPDB_CORRUPT;
    }
    struct tpdb_snaprec_db *out = tpdb_calloc(n ? n : 1, sizeof *out);
    if (out == NULL) {
        tpdbErrf(errmsg, "snapshot record: out of memory");
        return TPDB_NOMEM;
    }
    size_t off = REC_HDR;
    for (uint32_t i = 0; i < n; i++) {
        int rc = decodeDb(p, end, &off, &out[i], errmsg);
        if (rc != TPDB_OK) {
            tpdb_free(out);
            return rc;
        }
    }
    if (off != end) {
        tpdbErrf(errmsg, "snapshot record: %zu stray bytes", end - off);
        tpdb_free(out);
        return TPDB_CORRUPT;
    }
    *index = tpdbGet64(p + 8);
    *dbs = out;
    *n_dbs = n;
    return TPDB_OK;
}
