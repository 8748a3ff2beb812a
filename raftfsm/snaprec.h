/*
 * Snapshot record: what a node's Raft snapshot holds since the database
 * files themselves are the state. A node takes one only once every listed
 * database is durable on its disk up to the record's index, so it costs
 * nothing that grows with the databases; a node that installs a record it
 * is behind gets each SQLite database as a page stream from a peer
 * (fetch.h), and each TPDB page file (TrashPandaDB's format) the same way
 * (kind TPDB_SNAPREC_TPDBREF). Records written before that carry TPDB
 * files as whole images (kind TPDB_SNAPREC_TPDBFILE): they still decode,
 * and restore applies the image.
 *
 * Layout (little-endian):
 *   header: u32 magic "TPS2", u32 version (1), u64 index, u32 database
 *           count, u32 reserved (0)
 *   per database: u16 name length, name bytes, u8 kind (TPDB_SNAPREC_*),
 *           u8 reserved (0), u16 reserved (0), u32 page_size, u32 db_pages,
 *           u32 image length (db_pages * page_size for TPDB_SNAPREC_TPDBFILE,
 *           0 for the other kinds), then the image bytes
 *   trailer: u32 CRC-32C of every byte before it
 */
#ifndef TPDB_SNAPREC_H
#define TPDB_SNAPREC_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

/* SQLITE: a SQLite database, by reference; TPDBFILE: a TPDB page file with
 * its whole image (older records only, never encoded by this version's
 * snapshots); TPDBREF: a TPDB page file by reference. A node of an earlier
 * version refuses a record with TPDBREF as corrupt. */
enum {
    TPDB_SNAPREC_SQLITE = 1,
    TPDB_SNAPREC_TPDBFILE = 2,
    TPDB_SNAPREC_TPDBREF = 3
};

struct tpdb_snaprec_db {
    char name[256];       /* NUL-terminated, 1..255 bytes */
    int kind;             /* TPDB_SNAPREC_* */
    uint32_t page_size;   /* TPDB files: TPDB_FILE_PAGE_SIZE; SQLite: 0 */
    uint32_t db_pages;    /* TPDB files: pages in the replication mapping
                             (page_count + 1), 0 if the file held nothing;
                             SQLite databases: 1 if the database held data,
                             0 if it was empty */
    const uint8_t *image; /* TPDBFILE only: db_pages * page_size bytes */
};

/* Whether buf starts like a record (magic only: a cheap format probe). */
int tpdbSnaprecIs(const void *buf, size_t len);

/* Encodes a record into one buffer allocated with raft_malloc() (raft
 * frees snapshot buffers through the FSM's finalize). Errors: TPDB_INVALID
 * (bad name, kind or image), TPDB_NOMEM. */
int tpdbSnaprecEncode(uint64_t index,
                      const struct tpdb_snaprec_db *dbs,
                      unsigned n_dbs,
                      void **buf,
                      size_t *len,
                      char *errmsg);

/* Validates and decodes a record. On TPDB_OK *dbs is an array of *n_dbs
 * entries allocated with tpdb_malloc (free with tpdb_free) whose images
 * point into buf: valid while buf is. Never reads outside buf.
 * Errors: TPDB_CORRUPT (errmsg says what), TPDB_NOMEM. */
int tpdbSnaprecDecode(const void *buf,
                      size_t len,
                      uint64_t *index,
                      struct tpdb_snaprec_db **dbs,
                      unsigned *n_dbs,
                      char *errmsg);

#endif /* TPDB_SNAPREC_H */
