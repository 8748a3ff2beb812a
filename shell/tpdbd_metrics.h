/*
 * tpdbd's operator metrics (--metrics HOST:PORT): Prometheus text format
 * (version 0.0.4) over HTTP/1.1, GET /metrics, one connection at a time on
 * a thread of its own, each closed after its reply. The numbers come from
 * the library's tpdb_status() (Raft, apply, snapshots, fetches, each
 * database) and tpdbd's own counters; nothing is cached between scrapes.
 * Owned by main (tpdbd.c): started once the node is up, stopped before it
 * stops.
 */
#ifndef TPDBD_METRICS_H
#define TPDBD_METRICS_H

#include <stddef.h>

#include <jansson.h>

struct tpdbd;
struct tpdbd_metrics;

/* Upper bounds (ms) of the request latency histogram's buckets; one more
 * bucket (+Inf) follows. struct tpdbd holds TPDBD_LATENCY_BUCKETS + 1
 * counters. */
#define TPDBD_LATENCY_BUCKETS 13

/* Counts one request that took ms milliseconds (any thread). */
void tpdbdMetricsObserve(struct tpdbd *d, long long ms);

/* Every fact of the exposition text for d now, as JSON (the `metrics`
 * action's, README "Metrics"): "up", "node", "raft", "fsm", "databases",
 * "writes_total", "queries_total", "slow_queries_total", "group_commit",
 * "latency" (raft, fsm and databases only when the node answers its
 * status). Caller json_decrefs; NULL when out of memory. Any thread. */
json_t *tpdbdMetricsJson(struct tpdbd *d);

/* The exposition text for d now (from tpdbdMetricsJson), malloc'ed (caller
 * frees), or NULL when out of memory. Any thread; d->control must stay open
 * meanwhile. */
char *tpdbdMetricsText(struct tpdbd *d);

/* Listens on d->cfg.metrics and starts the serving thread. Returns 0 with
 * *out set (stop it with tpdbdMetricsStop), or -1 with err (size bytes). */
int tpdbdMetricsStart(struct tpdbd_metrics **out,
                      struct tpdbd *d,
                      char *err,
                      size_t size);

/* Stops the thread (after the reply in progress, which is bounded by
 * 5 s reading and 5 s per write), closes the listener and frees m. NULL
 * is a no-op. */
void tpdbdMetricsStop(struct tpdbd_metrics *m);

#endif /* TPDBD_METRICS_H */
