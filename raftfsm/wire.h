/*
 * The wire check: frames the byte stream a peer sends to raft into raft
 * 0.15 messages and refuses any message that raft_uv's decoder, which
 * trusts every length, could not take safely. Incremental and allocation
 * bounded: a message's preamble and header are held until checked (the
 * header at most TPDB_WIRE_HEADER_MAX bytes, and only as far as bytes have
 * arrived), payloads pass through as they come except configuration
 * entries, held until checked. Nothing of a message that fails reaches the
 * output beyond what a partial message can do to raft (nothing: raft drops
 * a message whose stream ends before its last byte, and the last byte of a
 * unit is emitted only once the unit is checked).
 *
 * raft 0.15 layout (observed in real traffic between two raft_uv nodes
 * and checked against raft.h's message structs; all integers
 * little-endian u64 unless said):
 *   preamble  16  message type, header length H
 *   header    H   per type, below
 *   payload       AppendEntries: the entries' data, each padded to 8;
 *                 InstallSnapshot: the snapshot data
 *
 *   type                       header
 *   1 AppendEntries            term, prev index, prev term, commit, n, then
 *                              n x (term, u8 type, 3 pad, u32 length), then
 *                              8 bytes raft leaves unset and never reads
 *   2 AppendEntries result     term, rejected, last log index
 *   3 RequestVote              term, candidate id, last index, last term,
 *                              flags (bit 0 disrupt leader, bit 1 pre-vote)
 *   4 RequestVote result       term, granted, flags (bit 0 pre-vote)
 *   5 InstallSnapshot          term, last index, last term, conf index,
 *                              conf length C, conf (C, padded to 8), data
 *                              length, 8 bytes unset
 *   6 TimeoutNow               term, last index, last term
 *
 * A configuration (in a change entry or InstallSnapshot): u8 format (1),
 * u64 n, n x (u64 id, NUL-terminated address, u8 role 0..2).
 */
#ifndef TPDB_WIRE_H
#define TPDB_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#define TPDB_WIRE_PREAMBLE 16
/* Largest header: AppendEntries with TPDB_WIRE_ENTRIES_MAX entries (16
 * MiB). raft 0.15 may send every entry a follower lacks in one message, so
 * a node refuses a configuration that could keep more entries than half of
 * this (node_start.c). */
#define TPDB_WIRE_ENTRIES_MAX (1u << 20)
#define TPDB_WIRE_HEADER_MAX (48u + 16u * TPDB_WIRE_ENTRIES_MAX)
/* Largest configuration: in a change entry or an InstallSnapshot (some
 * 2,000 servers of typical addresses). */
#define TPDB_WIRE_CONF_MAX (64u << 10)
/* Terms further ahead of ours than this are refused, and no term may come
 * within this distance of overflowing. */
#define TPDB_WIRE_TERM_AHEAD (1ull << 32)

/* Returns the current term of the local raft (0 if unknown). */
typedef uint64_t (*tpdb_wire_term_fn)(void *arg);

/* What the check allows. Zero fields take the defaults named. */
struct tpdb_wire_limits {
    uint64_t entry_max;        /* one entry's data; default the largest entry
                                  the entry format can encode */
    uint64_t payload_max;      /* one AppendEntries' payload; default 4 GiB */
    uint64_t snapshot_max;     /* InstallSnapshot data; default 64 MiB */
    tpdb_wire_term_fn term_fn; /* NULL: only the overflow bound applies */
    void *term_arg;
    uint64_t entries_max; /* entries in one AppendEntries, at most and by
                             default TPDB_WIRE_ENTRIES_MAX; it bounds the
                             header a stream may make us hold */
};

/* Takes checked bytes; returns TPDB_OK or an error code, which stops the
 * feed with that code. */
typedef int (*tpdb_wire_emit_fn)(void *arg, const uint8_t *p, size_t n);

/* The check's state for one stream. Zeroed by tpdbWireInit. Private. */
struct tpdb_wire {
    struct tpdb_wire_limits limits;
    int state;
    uint8_t pre[TPDB_WIRE_PREAMBLE];
    uint64_t type;
    uint8_t *buf; /* the header; tpdb_malloc'ed */
    size_t cap;
    uint8_t *hold; /* a configuration entry being checked */
    size_t hold_cap;
    size_t have;
    size_t want;
    uint64_t n_entries; /* AppendEntries: entries and the one being read */
    uint64_t entry;
    uint64_t left;     /* bytes of the current payload part still to come */
    uint64_t messages; /* checked whole messages */
};

/* Prepares w with `limits` (copied; NULL for all defaults). */
void tpdbWireInit(struct tpdb_wire *w, const struct tpdb_wire_limits *limits);

/* Frees what w holds. w may be initialised again. */
void tpdbWireClose(struct tpdb_wire *w);

/* Feeds n bytes from the peer; checked bytes go to emit (valid during the
 * call only) in order. Errors: TPDB_PROTO (errmsg says what was refused;
 * the stream must be closed and w fed no more), TPDB_NOMEM, or whatever
 * emit returned. */
int tpdbWireFeed(struct tpdb_wire *w,
                 const uint8_t *p,
                 size_t n,
                 tpdb_wire_emit_fn emit,
                 void *arg,
                 char *errmsg);

/* Whole messages checked so far. */
uint64_t tpdbWireMessages(const struct tpdb_wire *w);

#endif /* TPDB_WIRE_H */
