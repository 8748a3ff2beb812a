/*
 * The transport's guard: which relays are open (to cap the streams one
 * address may hold and close them all at shutdown) and the refusal log,
 * which counts every refused connection or message but writes at most one
 * line per address and minute, so that a flood cannot flood the log.
 * Loop thread only.
 */
#ifndef TPDB_GUARD_H
#define TPDB_GUARD_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

struct tpdb_relay;

#define TPDB_GUARD_LOG_SLOTS 16
#define TPDB_GUARD_LOG_MS 60000

/* Zero-initialised by its owner; tpdbGuardCloseAll at the end. Private. */
struct tpdb_guard {
    struct tpdb_guard_relay {
        struct tpdb_relay *r;
        uint32_t ip;
        int inbound;
    } * relays; /* tpdb_malloc'ed, n of cap used; freed when empty */
    size_t n;
    size_t cap;
    struct {
        uint32_t ip;
        uint64_t ms;         /* when a line was last written */
        unsigned long quiet; /* refusals not logged since */
    } log[TPDB_GUARD_LOG_SLOTS];
    unsigned long refused;
};

/* Makes room for one more relay. Errors: TPDB_NOMEM. */
int tpdbGuardReserve(struct tpdb_guard *g);

/* Records relay r (room reserved first), from an accepted stream if
 * inbound. */
void tpdbGuardAdd(struct tpdb_guard *g, struct tpdb_relay *r, int inbound);

/* Forgets r (from its closed callback). */
void tpdbGuardRemove(struct tpdb_guard *g, struct tpdb_relay *r);

/* Open relays of accepted streams from ip; all open relays. */
unsigned tpdbGuardCount(const struct tpdb_guard *g, uint32_t ip);
size_t tpdbGuardRelays(const struct tpdb_guard *g);

/* Counts a refusal from ip (network order; 0 unknown) and logs why
 * (valid during the call) unless that address was logged in the last
 * minute. */
void tpdbGuardRefused(struct tpdb_guard *g, uint32_t ip, const char *why);

/* Refusals counted so far. */
unsigned long tpdbGuardRefusedCount(const struct tpdb_guard *g);

/* Closes every open relay; each is forgotten from its closed callback. */
void tpdbGuardCloseAll(struct tpdb_guard *g);

#endif /* TPDB_GUARD_H */
