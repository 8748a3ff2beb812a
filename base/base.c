/*
 * Base utilities: error table, errmsg formatting, allocator with failure
 * injection, levelled logger, CRC-32C and a monotonic clock. See base.h.
 */
#include "base/base.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const char *const errTable[TPDB_NRC] = {
    [TPDB_OK] = "ok",
    [TPDB_NOMEM] = "out of memory",
    [TPDB_IOERR] = "I/O error",
    [TPDB_CORRUPT] = "corrupt or truncated data",
    [TPDB_INVALID] = "invalid argument",
    [TPDB_NOTLEADER] = "not the leader",
    [TPDB_UNKNOWN] =
        "outcome unknown: leadership lost before the commit "
        "was acknowledged",
    [TPDB_SHUTDOWN] = "node is shutting down",
    [TPDB_TIMEOUT] = "timed out",
    [TPDB_BUSY] = "busy",
    [TPDB_NOTFOUND] = "not found",
    [TPDB_RAFT] = "raft error",
    [TPDB_PROTO] = "protocol error",
    [TPDB_FULL] = "disk full",
    [TPDB_TOOBIG] = "too big",
    [TPDB_READONLY] = "read-only: the node is owned by another process",
    [TPDB_MISUSE] = "library misuse",
};

const char *tpdb_strerror(int rc)
{
    if (rc < 0 || rc >= TPDB_NRC || errTable[rc] == NULL) {
        return "unknown error code";
    }
    return errTable[rc];
}

void tpdbErrf(char *errmsg, const char *fmt, ...)
{
    va_list ap;
    if (errmsg == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(errmsg, TPDB_ERRMSG_SIZE, fmt, ap);
    va_end(ap);
}

void tpdbErrWrap(char *errmsg, const char *fmt, ...)
{
    char prev[TPDB_ERRMSG_SIZE];
    va_list ap;
    int n;
    if (errmsg == NULL) {
        return;
    }
    memcpy(prev, errmsg, TPDB_ERRMSG_SIZE);
    prev[TPDB_ERRMSG_SIZE - 1] = '\0';
    va_start(ap, fmt);
    n = vsnprintf(errmsg, TPDB_ERRMSG_SIZE, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= TPDB_ERRMSG_SIZE - 2) {
        return;
    }
    snprintf(errmsg + n, (size_t)(TPDB_ERRMSG_SIZE - n), ": %s", prev);
}

/* Failure injection: -1 means off. */
static long allocCountdown = -1;

static int allocShouldFail(void)
{
    if (allocCountdown < 0) {
        return 0;
    }
    if (allocCountdown == 0) {
        return 1;
    }
    allocCountdown--;
    return 0;
}

void tpdbAllocFailAfter(long countdown)
{
    allocCountdown = countdown;
}

void *tpdb_malloc(size_t n)
{
    if (allocShouldFail()) {
        return NULL;
    }
    return malloc(n == 0 ? 1 : n);
}

void *tpdb_calloc(size_t count, size_t size)
{
    if (allocShouldFail()) {
        return NULL;
    }
    return calloc(count == 0 ? 1 : count, size == 0 ? 1 : size);
}

void *tpdb_realloc(void *p, size_t n)
{
    if (allocShouldFail()) {
        return NULL;
    }
    return realloc(p, n == 0 ? 1 : n);
}

void tpdb_free(void *p)
{
    free(p);
}

char *tpdbUriOfPath(const char *path, const char *query)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t qlen = query != NULL ? strlen(query) + 1 : 0;
    size_t cap = 8 + 3 * strlen(path) + qlen + 1;
    char *out = tpdb_malloc(cap);
    size_t o;
    if (out == NULL) {
        return NULL;
    }
    const char *scheme = path[0] == '/' ? "file://" : "file:";
    o = strlen(scheme);
    memcpy(out, scheme, o);
    for (const char *p = path; *p != '\0'; p++) {
        if (*p == '%' || *p == '?' || *p == '#') {
            out[o++] = '%';
            out[o++] = hex[(unsigned char)*p >> 4];
            out[o++] = hex[(unsigned char)*p & 15];
        } else {
            out[o++] = *p;
        }
    }
    if (query != NULL) {
        out[o++] = '?';
        memcpy(out + o, query, qlen - 1);
        o += qlen - 1;
    }
    out[o] = '\0';
    return out;
}

char *tpdb_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = tpdb_malloc(n);
    if (copy != NULL) {
        memcpy(copy, s, n);
    }
    return copy;
}

static const char *const levelNames[] = {"debug", "info", "warn", "error",
                                         "none"};

int tpdbLogParseLevel(const char *name)
{
    for (int i = 0; name != NULL && i <= TPDB_LOG_NONE; i++) {
        if (strcasecmp(name, levelNames[i]) == 0) {
            return i;
        }
    }
    return -1;
}

/* -1: not yet read from the environment. Atomic because any thread may log
 * while a connection's log_level parameter sets it. */
static _Atomic int logLevel = -1;

void tpdbLogSetLevel(int level)
{
    logLevel = level;
}

/* TPDB_LOG_LEVEL, else TPDB_TRACE (debug), else errors only. */
static int levelFromEnv(void)
{
    const char *name = getenv("TPDB_LOG_LEVEL");
    int level = tpdbLogParseLevel(name);
    if (level >= 0) {
        return level;
    }
    if (name != NULL && name[0] != '\0') {
        fprintf(stderr,
                "tpdb: TPDB_LOG_LEVEL='%s' is not one of "
                "error|warn|info|debug|none: using error\n",
                name);
    }
    return getenv("TPDB_TRACE") != NULL ? TPDB_LOG_DEBUG : TPDB_LOG_ERROR;
}

int tpdbLogEnabled(int level)
{
    int current = logLevel;
    if (current < 0) {
        int expected = -1;
        current = levelFromEnv();
        if (!atomic_compare_exchange_strong(&logLevel, &expected, current)) {
            current = expected;
        }
    }
    return level >= current;
}

void tpdbLog(int level, const char *fmt, ...)
{
    static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    char line[1024];
    va_list ap;
    if (!tpdbLogEnabled(level) || level < 0 || level > TPDB_LOG_ERROR) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "tpdb %llu %s %s\n", (unsigned long long)tpdbNowMs(),
            names[level], line);
}

/* Table for the reflected CRC-32C polynomial 0x82F63B78, built on first
 * use. Building it twice from two threads writes the same values. */
static uint32_t crcTable[256];
static int crcReady;

static void crcInit(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
        crcTable[i] = c;
    }
    __atomic_store_n(&crcReady, 1, __ATOMIC_RELEASE);
}

uint32_t tpdbCrc32cPortable(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    if (!__atomic_load_n(&crcReady, __ATOMIC_ACQUIRE)) {
        crcInit();
    }
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc = crcTable[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    }
    return ~crc;
}

#if defined(__x86_64__) && defined(__GNUC__)
/* SSE4.2's crc32 instruction computes CRC-32C itself, about 20 times as
 * fast as the table: every log entry, snapshot stream chunk and TPDB page
 * is checksummed, so the table was a third of a node's CPU under a bulk
 * load. */
__attribute__((target("sse4.2"))) static uint32_t crcSse42(uint32_t crc,
                                                           const void *buf,
                                                           size_t len)
{
    const uint8_t *p = buf;
    uint64_t c = ~crc;
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
    }
    uint32_t c32 = (uint32_t)c;
    for (; len > 0; p++, len--) {
        c32 = __builtin_ia32_crc32qi(c32, *p);
    }
    return ~c32;
}

uint32_t tpdbCrc32c(uint32_t crc, const void *buf, size_t len)
{
    static int hw = -1;
    int use = __atomic_load_n(&hw, __ATOMIC_RELAXED);
    if (use < 0) {
        __builtin_cpu_init();
        use = __builtin_cpu_supports("sse4.2") ? 1 : 0;
        __atomic_store_n(&hw, use, __ATOMIC_RELAXED);
    }
    return use ? crcSse42(crc, buf, len) : tpdbCrc32cPortable(crc, buf, len);
}
#else
uint32_t tpdbCrc32c(uint32_t crc, const void *buf, size_t len)
{
    return tpdbCrc32cPortable(crc, buf, len);
}
#endif

uint64_t tpdbNowNs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t tpdbNowMs(void)
{
    return tpdbNowNs() / 1000000u;
}

void tpdbCondWaitMs(pthread_cond_t *cond, pthread_mutex_t *mutex, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(cond, mutex, &ts);
}
