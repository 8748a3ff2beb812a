/*
 * tpdbd's DNS discovery (--dns-peers): the initial voters are the
 * addresses a name resolves to, node ids are their IP strings, as in
 * TrashPandaDB 0.8 (docs: tpdb-server.md), with its messages and size
 * guard. Unlike TrashPandaDB, a failed lookup, too few addresses or a list
 * without this node's own address is not fatal at once: the name is
 * resolved again every second until --ready-ms has passed. Only IPv4
 * addresses count (raft's addresses here are IPv4); IPv6 ones are logged
 * and ignored.
 */
#ifndef TPDBD_DNS_H
#define TPDBD_DNS_H

#include <signal.h>
#include <stddef.h>

#include "shell/tpdbd_flags.h"

/* Resolves cfg->dns_peers (which must be set) with the system resolver
 * (getaddrinfo: /etc/hosts, then DNS, per nsswitch.conf) until it yields at
 * least cfg->dns_min IPv4 addresses including this node's own, or
 * cfg->ready_ms (default 15000) has passed. This node's own address is the
 * --raft host if it is in the list; for 0.0.0.0 the first address of the
 * host name (gethostname) that is in the list, else the one listed address
 * a socket can bind to. Then fills in cfg: node_id (if --node-id was not
 * given) and raft_id, raft_addr (own IP and --dns-raft-port), and a member
 * per other address (id IP, raft IP:--dns-raft-port, client
 * IP:--dns-client-port). Logs each new list ("DNS NAME → a, b (2
 * addresses)") and the own IP on stderr. Blocks; call before any thread
 * starts. Between lookups it returns 1 at once if stopFd (-1: none) is
 * readable, e.g. the signal pipe after SIGTERM; those pauses run with the
 * signal mask wait_mask (ppoll; NULL: the thread's own). Returns 0, 1, or -1
 * with the "ERROR: ..." line in err (size bytes). */
int tpdbdDnsDiscover(struct tpdbd_config *cfg,
                     int stopFd,
                     const sigset_t *wait_mask,
                     char *err,
                     size_t size);

#endif /* TPDBD_DNS_H */
