/*
 * Base utilities shared by every tpdb layer: the error table, error message
 * buffers, the replaceable allocator, the logger and CRC-32C.
 *
 * They are the bottom layer, in a folder of their own: vfs/, raftfsm/, ext/
 * and shell/ all link them, and nothing here knows of SQLite or Raft.
 */
#ifndef TPDB_BASE_H
#define TPDB_BASE_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define TPDB_API __attribute__((visibility("default")))

/* Error codes. 0 is success; every other value has a message in the table
 * behind tpdb_strerror(). Codes only grow at the end. */
enum {
    TPDB_OK = 0,
    TPDB_NOMEM,     /* out of memory */
    TPDB_IOERR,     /* I/O error */
    TPDB_CORRUPT,   /* corrupt or truncated data */
    TPDB_INVALID,   /* invalid argument or configuration */
    TPDB_NOTLEADER, /* this node is not the leader */
    TPDB_UNKNOWN,   /* outcome unknown: leadership lost mid-commit */
    TPDB_SHUTDOWN,  /* the node is shutting down */
    TPDB_TIMEOUT,   /* timed out */
    TPDB_BUSY,      /* resource busy */
    TPDB_NOTFOUND,  /* no such object */
    TPDB_RAFT,      /* error reported by the Raft library */
    TPDB_PROTO,     /* malformed message from a peer or client */
    TPDB_FULL,      /* disk full */
    TPDB_TOOBIG,    /* value too large */
    TPDB_READONLY,  /* writes go through another process's node */
    TPDB_MISUSE,    /* API misuse */
    TPDB_NRC        /* number of codes, not a code */
};

/* Size of every errmsg buffer in tpdb. */
#define TPDB_ERRMSG_SIZE 512

/* Message for an error code; never NULL, static storage. */
TPDB_API const char *tpdb_strerror(int rc);

/* Formats into errmsg (TPDB_ERRMSG_SIZE bytes), replacing its content. A NULL
 * errmsg is ignored. Never allocates. */
void tpdbErrf(char *errmsg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefixes errmsg with context: "context: <previous message>". Never
 * allocates; truncates at TPDB_ERRMSG_SIZE. */
void tpdbErrWrap(char *errmsg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Allocator. Every library allocation goes through these so that tests can
 * inject failures. tpdb_free(NULL) is a no-op. */
void *tpdb_malloc(size_t n);
void *tpdb_calloc(size_t count, size_t size);
void *tpdb_realloc(void *p, size_t n);
void tpdb_free(void *p);
char *tpdb_strdup(const char *s);

/* The SQLite URI "file:PATH?QUERY" of a file path: '%', '?' and '#' in
 * path are percent-encoded (SQLite decodes %HH and cuts the path at '?' or
 * '#'), and an absolute path gets an empty authority so that a leading
 * "//" stays part of it. query (NULL: none) is appended as is. Returns a
 * tpdb_malloc'ed string the caller frees, or NULL when out of memory. */
char *tpdbUriOfPath(const char *path, const char *query);

/* Test hook: after `countdown` more successful allocations, every allocation
 * fails until reset with a negative countdown. Not thread-safe; for unit
 * tests only. */
void tpdbAllocFailAfter(long countdown);

/* Log levels. Lines go to stderr. The level is read on first use from
 * TPDB_LOG_LEVEL (error, warn, info, debug or none); without it TPDB_TRACE
 * (any value) means DEBUG, and the default is ERROR, so that a failure
 * (an open that fails, an entry that cannot be applied) always says why.
 * tpdbLogSetLevel (the URI parameter log_level) replaces it process-wide. */
enum {
    TPDB_LOG_DEBUG = 0,
    TPDB_LOG_INFO,
    TPDB_LOG_WARN,
    TPDB_LOG_ERROR,
    TPDB_LOG_NONE
};

/* The level named by `name` (case-insensitive "debug", "info", "warn",
 * "error", "none"), or -1 if it names none (or is NULL). */
int tpdbLogParseLevel(const char *name);
void tpdbLogSetLevel(int level);
int tpdbLogEnabled(int level);
/* Writes one line to stderr if `level` is enabled. */
void tpdbLog(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* CRC-32C (Castagnoli) of buf, continuing from crc (start with 0). */
uint32_t tpdbCrc32c(uint32_t crc, const void *buf, size_t len);

/* The same CRC from a table, whatever the CPU offers (for tests: the
 * hardware path must agree with it). */
uint32_t tpdbCrc32cPortable(uint32_t crc, const void *buf, size_t len);

/* Little- and big-endian integer helpers for on-disk and wire formats. */
static inline void tpdbPut16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void tpdbPut32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}
static inline void tpdbPut64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}
static inline uint16_t tpdbGet16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t tpdbGet32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}
static inline uint64_t tpdbGet64(const uint8_t *p)
{
    return (uint64_t)tpdbGet32(p) | ((uint64_t)tpdbGet32(p + 4) << 32);
}
static inline void tpdbPutBe32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline uint32_t tpdbGetBe32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* Waits on cond (mutex held by the caller) for at most ms milliseconds or
 * until signalled; spurious wake-ups return early too, so callers re-check
 * their condition in a loop with their own deadline. */
void tpdbCondWaitMs(pthread_cond_t *cond, pthread_mutex_t *mutex, unsigned ms);

/* Monotonic clock in milliseconds and nanoseconds. */
uint64_t tpdbNowMs(void);
uint64_t tpdbNowNs(void);

#endif /* TPDB_BASE_H */
