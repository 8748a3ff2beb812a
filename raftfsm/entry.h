/*
 * Raft log entry format: one committed transaction of one database,
 * lz4-compressed, checksummed and padded to a multiple of 8 bytes (raft 0.15
 * can fail to load segments holding entries of other lengths).
 *
 * Layout (little-endian):
 *   0   u32  magic "TPE1"
 *   4   u8   format version (1)
 *   5   u8   type (TPDB_ENTRY_*)
 *   6   u16  flags (0)
 *   8   u64  origin: the proposing node instance (random per process start)
 *   16  u64  seq: the proposal's sequence number within that instance
 *   24  u32  page_size
 *   28  u32  db_pages (database size in pages after the commit)
 *   32  u32  n_pages
 *   36  u32  payload raw length (n_pages * (4 + page_size))
 *   40  u32  payload compressed length
 *   44  u16  database name length (1..TPDB_DBNAME_MAX)
 *   46  u16  reserved (0)
 *   48  u32  CRC-32C of the name bytes, then the payload as stored
 *            (compressed)
 *   52  u32  CRC-32C of bytes 0..51
 *   56  name bytes, then the lz4 block of the payload
 *       [u32 pgno][page_size bytes] * n_pages, pgno strictly increasing,
 *   then zero padding to a multiple of 8.
 */
#ifndef TPDB_ENTRY_H
#define TPDB_ENTRY_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "vfs/txn.h"

#define TPDB_DBNAME_MAX 255

/* Whether name may name a replicated database: 1..TPDB_DBNAME_MAX bytes,
 * not starting with '.', without '/'. Encoding refuses any other name and
 * every node applies the same rule, so a leader never proposes an entry
 * that its followers refuse. */
int tpdbDbNameValid(const char *name);

enum {
    TPDB_ENTRY_TXN = 1,      /* a committed transaction's pages */
    TPDB_ENTRY_IMAGE = 2,    /* a whole database image (pages 1..db_pages) that
                                replaces the database, e.g. its first import */
    TPDB_ENTRY_TPDBFILE = 3, /* a commit to a TPDB page file (tpdbfile.h) */
    /* A transaction too large for one entry, split in parts (the VFS's
     * commit_part): BEGIN starts staging it, each CHUNK adds pages, END
     * adds its own and commits them all. Nothing is visible before END;
     * any other entry of the database ends a sequence without END, which
     * then never committed. db_pages is the size after the commit. */
    TPDB_ENTRY_CHUNK_BEGIN = 4,
    TPDB_ENTRY_CHUNK = 5,
    TPDB_ENTRY_CHUNK_END = 6,
    /* The first part of a whole TPDB page file too large for one entry
     * (the first commit of a file the cluster never carried): the
     * TPDB_ENTRY_TPDBFILE mapping, header page first; CHUNK and CHUNK_END
     * entries follow with the next pages in order, as for a large
     * transaction. Followers build the file aside and switch to it at
     * END. */
    TPDB_ENTRY_TPDBFILE_BEGIN = 7,
    /* The first part of a commit of changes to a TPDB page file the
     * cluster already carries, too large for one entry: the
     * TPDB_ENTRY_TPDBFILE mapping, header page first, then changed pages;
     * CHUNK and CHUNK_END entries follow with the next changed pages, page
     * numbers increasing across the parts. Followers stage the parts aside
     * and commit them all at END through the format's WAL protocol. */
    TPDB_ENTRY_TPDBFILE_DELTA = 8
};

/* TPDB_ENTRY_TPDBFILE maps a TPDB page file onto the txn (page_size 4096):
 * txn page 1 is a 4096-byte page whose first 64 bytes are the TPDB header
 * (magic, version, page_count, free_list_head; the rest zero), and txn page
 * N+1 is TPDB page N; db_pages = page_count + 1. Page 1 is always present.
 * An entry holding every page 1..db_pages is a whole-file image. */

/* A decoded entry. */
struct tpdb_entry {
    int type;
    uint64_t origin;
    uint64_t seq;
    char db[TPDB_DBNAME_MAX + 1]; /* NUL-terminated database name */
    struct tpdb_txn txn;          /* pages point into `payload` */
    void *payload;                /* owned; freed by tpdbEntryRelease */
};

/* Encodes `txn` of database `db`. On TPDB_OK, *buf and *len hold a buffer
 * allocated with raft_malloc() (so that raft_apply can take ownership), len
 * a multiple of 8. Errors: TPDB_INVALID (bad name, page size or page list),
 * TPDB_NOMEM, TPDB_TOOBIG. */
int tpdbEntryEncode(int type,
                    const char *db,
                    uint64_t origin,
                    uint64_t seq,
                    const struct tpdb_txn *txn,
                    void **buf,
                    size_t *len,
                    char *errmsg);

/* Decodes only the fixed header and name, cheaply (no decompression, but
 * header CRC checked). e->payload stays NULL and e->txn.pages NULL. The
 * name is covered by the payload CRC, which only tpdbEntryDecode checks.
 * Errors: TPDB_CORRUPT with errmsg saying what is wrong. */
int tpdbEntryPeek(const void *buf,
                  size_t len,
                  struct tpdb_entry *e,
                  char *errmsg);

/* Fully decodes and validates an entry: both CRCs, lengths, decompression,
 * page numbers increasing and <= db_pages, page size valid. Never reads
 * outside buf. On TPDB_OK the caller owns e->payload and releases it with
 * tpdbEntryRelease. Errors: TPDB_CORRUPT, TPDB_NOMEM. */
int tpdbEntryDecode(const void *buf,
                    size_t len,
                    struct tpdb_entry *e,
                    char *errmsg);

/* Frees what tpdbEntryDecode allocated; safe on a zeroed or peeked entry. */
void tpdbEntryRelease(struct tpdb_entry *e);

#endif /* TPDB_ENTRY_H */
