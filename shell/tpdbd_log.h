/*
 * tpdbd's logger: one line per message on stderr, "tpdbd[pid] LEVEL text",
 * filtered by a level set once at start (--log-level). Safe from any
 * thread; the level check happens before any formatting.
 */
#ifndef TPDBD_LOG_H
#define TPDBD_LOG_H

enum { TPDBD_DEBUG = 0, TPDBD_INFO, TPDBD_WARN, TPDBD_ERROR };

/* Parses "debug", "info", "warn" or "error" into *level; returns 0, or -1
 * for anything else. */
int tpdbdLogParse(const char *name, int *level);

/* Sets the lowest level written (default TPDBD_INFO). Call before any
 * thread starts. */
void tpdbdLogSetLevel(int level);

/* Whether messages of level are written. */
int tpdbdLogEnabled(int level);

/* Writes one line to stderr if level is enabled. */
void tpdbdLog(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif /* TPDBD_LOG_H */
