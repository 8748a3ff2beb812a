/*
 * Snapshot format: a consistent image of every replicated database, each
 * lz4-compressed in chunks, with the applied index it corresponds to.
 *
 * Layout (little-endian):
 *   header: u32 magic "TPS1", u32 version (1), u64 applied index,
 *           u32 number of databases, u32 CRC-32C of the first 20 bytes
 *   per database:
 *     u16 name length, name bytes, u32 page_size, u32 db_pages,
 *     u32 chunk count, then per chunk:
 *       u32 raw length, u32 compressed length, u32 CRC-32C of the
 *       compressed bytes, compressed bytes
 *   Every raw chunk holds whole pages; chunks are at most 4 MiB raw.
 */
#ifndef TPDB_SNAPSHOT_H
#define TPDB_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

struct tpdb_snapshot_db {
    const char *name; /* NUL-terminated */
    uint32_t page_size;
    uint32_t db_pages;
    const uint8_t *image; /* page_size * db_pages bytes */
};

/* Encodes the images into one buffer allocated with raft_malloc() (raft
 * frees snapshot buffers). Errors: TPDB_INVALID, TPDB_NOMEM. */
int tpdbSnapshotEncode(uint64_t applied,
                       const struct tpdb_snapshot_db *dbs,
                       unsigned n_dbs,
                       void **buf,
                       size_t *len,
                       char *errmsg);

/* Callback for each database while decoding: `image` holds the whole
 * decompressed database, valid only during the call. Return TPDB_OK to
 * continue; any other code stops decoding and is returned. */
typedef int (*tpdb_snapshot_db_cb)(void *arg,
                                   const struct tpdb_snapshot_db *db,
                                   char *errmsg);

/* Validates and decodes a snapshot, calling cb for each database in order.
 * Never reads outside buf. Errors: TPDB_CORRUPT, TPDB_NOMEM, or cb's code. */
int tpdbSnapshotDecode(const void *buf,
                       size_t len,
                       uint64_t *applied,
                       tpdb_snapshot_db_cb cb,
                       void *arg,
                       char *errmsg);

#endif /* TPDB_SNAPSHOT_H */
