/*
 * The transport's guard (see guard.h): a small array of open relays and a
 * fixed table of recently logged addresses.
 */
#include "raftfsm/guard.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "raftfsm/relay.h"

int tpdbGuardReserve(struct tpdb_guard *g)
{
    size_t cap;
    struct tpdb_guard_relay *p;
    if (g->n < g->cap) {
        return TPDB_OK;
    }
    cap = g->cap == 0 ? 8 : g->cap * 2;
    p = tpdb_realloc(g->relays, cap * sizeof *p);
    if (p == NULL) {
        return TPDB_NOMEM;
    }
    g->relays = p;
    g->cap = cap;
    return TPDB_OK;
}

void tpdbGuardAdd(struct tpdb_guard *g, struct tpdb_relay *r, int inbound)
{
    g->relays[g->n].r = r;
    g->relays[g->n].ip = tpdbRelayPeerIp(r);
    g->relays[g->n].inbound = inbound;
    g->n++;
}

void tpdbGuardRemove(struct tpdb_guard *g, struct tpdb_relay *r)
{
    for (size_t i = 0; i < g->n; i++) {
        if (g->relays[i].r == r) {
            g->relays[i] = g->relays[--g->n];
            break;
        }
    }
    if (g->n == 0) {
        tpdb_free(g->relays);
        g->relays = NULL;
        g->cap = 0;
    }
}

unsigned tpdbGuardCount(const struct tpdb_guard *g, uint32_t ip)
{
    unsigned n = 0;
    for (size_t i = 0; i < g->n; i++) {
        n += g->relays[i].inbound && g->relays[i].ip == ip;
    }
    return n;
}

size_t tpdbGuardRelays(const struct tpdb_guard *g)
{
    return g->n;
}

/* The log slot of ip: its own, else the oldest one. */
static int logSlot(struct tpdb_guard *g, uint32_t ip)
{
    int oldest = 0;
    for (int i = 0; i < TPDB_GUARD_LOG_SLOTS; i++) {
        if (g->log[i].ms != 0 && g->log[i].ip == ip) {
            return i;
        }
        if (g->log[i].ms < g->log[oldest].ms) {
            oldest = i;
        }
    }
    g->log[oldest].ip = ip;
    g->log[oldest].ms = 0;
    g->log[oldest].quiet = 0;
    return oldest;
}

void tpdbGuardRefused(struct tpdb_guard *g, uint32_t ip, const char *why)
{
    uint64_t now = tpdbNowMs();
    int i = logSlot(g, ip);
    char addr[INET_ADDRSTRLEN] = "?";
    g->refused++;
    if (g->log[i].ms != 0 && now - g->log[i].ms < TPDB_GUARD_LOG_MS) {
        g->log[i].quiet++;
        return;
    }
    inet_ntop(AF_INET, &ip, addr, sizeof addr);
    tpdbLog(TPDB_LOG_WARN,
            "transport: refused %s: %s (%lu more refused "
            "since the last line)",
            addr, why, g->log[i].quiet);
    g->log[i].ms = now;
    g->log[i].quiet = 0;
}

unsigned long tpdbGuardRefusedCount(const struct tpdb_guard *g)
{
    return g->refused;
}

void tpdbGuardCloseAll(struct tpdb_guard *g)
{
    for (size_t i = 0; i < g->n; i++) {
        tpdbRelayClose(g->relays[i].r);
    }
}
