/*
 * Catch-up streams between nodes: a node whose state machine waits for a
 * database (fsm.h: a restore it is behind, or a commit it could not write)
 * asks a peer for it over the peer's raft port (handshake type FETCH) and
 * receives it as a page stream read from a pinned state, in bounded memory.
 *
 * Wire, after the 24-byte handshake (little-endian):
 *   request:  u16 name length, name, u64 min_index
 *             (name length 0: an index query; the response is u32 status
 *             0, u8 1 if the peer leads, u64 its commit index)
 *   response: u32 status; status != 0: u16 length, message, end;
 *             status 0: u32 page_size, u32 db_pages, u64 served_index,
 *             then chunks: u32 n_pages (0 ends), u32 CRC-32C of the data,
 *             n_pages * page_size bytes (pages in order from 1),
 *             then after the end: u32 pages sent
 *
 * Threads: one client thread per node works through the databases to
 * fetch, one at a time, retrying with backoff until each is in; each
 * served stream gets a thread of its own (at most FETCH_SERVERS at once).
 * Sockets are blocking with timeouts, so shutdown waits at most that long.
 */
#ifndef TPDB_FETCH_H
#define TPDB_FETCH_H

#include <stdint.h>

#include <raft.h>

#include "base/base.h"
#include "raftfsm/nodeconf.h"
#include "raftfsm/seal.h"

struct tpdb_fetch;

/* Fills addrs (up to max entries of TPDB_ADDRESS_MAX bytes) with the raft
 * addresses to fetch from, best first (the leader, then other members),
 * never this node's own; returns how many. Any thread. */
typedef unsigned (*tpdb_fetch_peers_fn)(void *arg,
                                        char (*addrs)[TPDB_ADDRESS_MAX],
                                        unsigned max);

/* Sets *leads (1 if this node is the leader) and *commit (its commit
 * index), for index queries. Any thread. */
typedef void (*tpdb_fetch_index_fn)(void *arg, int *leads, uint64_t *commit);

/* Creates the fetcher of a node: `fsm` (borrowed, outlives it), the node's
 * id and advertised address (copied), where to find peers and this node's
 * commit index (both called with `arg`). Errors: TPDB_NOMEM. */
int tpdbFetchInit(struct tpdb_fetch **out,
                  struct raft_fsm *fsm,
                  uint64_t id,
                  const char *address,
                  tpdb_fetch_peers_fn peers,
                  tpdb_fetch_index_fn index,
                  void *arg,
                  char *errmsg);

/* Asks the peers (leader first) for the leader's commit index; only an
 * answer from a peer that leads counts. Blocks up to a few seconds.
 * Errors: TPDB_NOTFOUND (no peer leads or answers). */
int tpdbFetchLeaderIndex(struct tpdb_fetch *f, uint64_t *index, char *errmsg);

/* The state machine's fetcher callback (tpdb_fsm_fetcher.start): queues
 * database `db` to fetch with a state that holds min_index. Any thread. */
void tpdbFetchStart(void *fetch, const char *db, uint64_t min_index);

/* The transport's FETCH callback: serves the stream on fd (owned) from a
 * thread of its own, or closes it when too many are served already.
 * session (copied; NULL: plain) seals the stream. */
void tpdbFetchServe(void *fetch,
                    int fd,
                    uint64_t id,
                    const struct tpdb_seal_session *session);

/* Makes every fetch a sealed stream with keys (borrowed until
 * tpdbFetchClose; set before the first fetch; NULL or n == 0: plain). */
void tpdbFetchSetKeys(struct tpdb_fetch *f, const struct tpdb_seal_keys *keys);

/* Stops the threads (waiting for them) and frees the fetcher. */
void tpdbFetchClose(struct tpdb_fetch *f);

#endif /* TPDB_FETCH_H */
