/*
 * tpdbd's client API: one JSON request line in, one JSON reply line out.
 * Actions (TrashPandaDB 0.8's, see README "tpdbd"): status, metrics,
 * propose, query, local_query. Thread-safe: client threads call it
 * concurrently.
 */
#ifndef TPDBD_API_H
#define TPDBD_API_H

#include <stddef.h>

#include "shell/tpdbd.h"

/* Answers the request in line[0..len) (not NUL-terminated, may hold any
 * bytes). Returns the reply, one line of compact JSON without newline,
 * malloc'ed (caller frees); NULL only when out of memory. */
char *tpdbdHandle(struct tpdbd *d, const char *line, size_t len);

/* {"ok":false,"error":msg} as a malloc'ed line; NULL if out of memory. */
char *tpdbdErrorReply(const char *msg);

#endif /* TPDBD_API_H */
