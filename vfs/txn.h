/*
 * A committed write transaction as a set of page images: what the leader's
 * VFS captures, what a Raft entry carries and what a follower applies.
 */
#ifndef TPDB_TXN_H
#define TPDB_TXN_H

#include <stdint.h>

struct tpdb_page {
    uint32_t pgno;       /* 1-based page number */
    const uint8_t *data; /* page_size bytes; owned by whoever built the txn */
};

struct tpdb_txn {
    uint32_t page_size;      /* 512..65536, a power of two */
    uint32_t db_pages;       /* database size in pages after the commit */
    uint32_t n_pages;        /* number of entries in pages */
    struct tpdb_page *pages; /* sorted by pgno, unique, each <= db_pages */
};

#endif /* TPDB_TXN_H */
