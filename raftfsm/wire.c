/*
 * The wire check of raft 0.15 messages (layout in wire.h). A stream is a
 * sequence of units: the preamble and header of a message (held, checked,
 * emitted together), then its payload parts: an AppendEntries entry's data
 * (passed through, or held and checked if it is a configuration change) or
 * InstallSnapshot's data (passed through).
 */
#include "raftfsm/wire.h"

#include <stdio.h>
#include <string.h>

#include <lz4.h>
#include <raft.h>

enum { S_PRE = 0, S_HDR, S_ENTRY, S_PASS, S_HOLD };

#define WIRE_INDEX_MAX                                    \
    (1ull << 62) /* far beyond any log, far from overflow \
                  */
#define WIRE_SERVERS_MAX 4096

/* Fixed header sizes by message type (AppendEntries and InstallSnapshot
 * vary). */
static const size_t fixedHeader[] = {
    [RAFT_IO_APPEND_ENTRIES_RESULT] = 24,
    [RAFT_IO_REQUEST_VOTE] = 40,
    [RAFT_IO_REQUEST_VOTE_RESULT] = 24,
    [RAFT_IO_TIMEOUT_NOW] = 24,
};

void tpdbWireInit(struct tpdb_wire *w, const struct tpdb_wire_limits *limits)
{
    memset(w, 0, sizeof *w);
    if (limits != NULL) {
        w->limits = *limits;
    }
    if (w->limits.entries_max == 0 ||
        w->limits.entries_max > TPDB_WIRE_ENTRIES_MAX) {
        w->limits.entries_max = TPDB_WIRE_ENTRIES_MAX;
    }
    if (w->limits.entry_max == 0) {
        /* An entry's header, name and padding, and the lz4 bound of the
         * largest payload the entry format takes. */
        w->limits.entry_max =
            (uint64_t)LZ4_COMPRESSBOUND(LZ4_MAX_INPUT_SIZE) + 4096;
    }
    if (w->limits.payload_max == 0) {
        w->limits.payload_max = 4ull << 30;
    }
    if (w->limits.snapshot_max == 0) {
        w->limits.snapshot_max = 64ull << 20;
    }
}

void tpdbWireClose(struct tpdb_wire *w)
{
    tpdb_free(w->buf);
    tpdb_free(w->hold);
    w->buf = NULL;
    w->hold = NULL;
    w->cap = 0;
    w->hold_cap = 0;
}

uint64_t tpdbWireMessages(const struct tpdb_wire *w)
{
    return w->messages;
}

static uint64_t pad8(uint64_t n)
{
    return (n + 7) & ~7ull;
}

/* Refuses terms raft could not take: beyond our term by more than
 * TPDB_WIRE_TERM_AHEAD, or close enough to UINT64_MAX that counting up
 * from them could overflow. */
static int checkTerm(const struct tpdb_wire *w,
                     uint64_t term,
                     const char *what,
                     char *errmsg)
{
    uint64_t limit = UINT64_MAX - TPDB_WIRE_TERM_AHEAD;
    if (w->limits.term_fn != NULL) {
        uint64_t ours = w->limits.term_fn(w->limits.term_arg);
        if (ours < limit - TPDB_WIRE_TERM_AHEAD) {
            limit = ours + TPDB_WIRE_TERM_AHEAD;
        }
    }
    if (term > limit) {
        tpdbErrf(errmsg, "%s: term %llu too far ahead (at most %llu)", what,
                 (unsigned long long)term, (unsigned long long)limit);
        return TPDB_PROTO;
    }
    return TPDB_OK;
}

static int checkIndex(uint64_t index, const char *what, char *errmsg)
{
    if (index > WIRE_INDEX_MAX) {
        tpdbErrf(errmsg, "%s: index %llu out of range", what,
                 (unsigned long long)index);
        return TPDB_PROTO;
    }
    return TPDB_OK;
}

/* Checks the preamble and sets the header length to gather. */
static int checkPreamble(struct tpdb_wire *w, char *errmsg)
{
    uint64_t type = tpdbGet64(w->pre);
    uint64_t len = tpdbGet64(w->pre + 8);
    int ok;
    switch (type) {
        case RAFT_IO_APPEND_ENTRIES:
            ok = len >= 48 && len <= 48 + 16 * w->limits.entries_max &&
                 (len - 48) % 16 == 0;
            break;
        case RAFT_IO_INSTALL_SNAPSHOT:
            ok = len >= 40 + 24 + 16 && len <= 56 + TPDB_WIRE_CONF_MAX &&
                 len % 8 == 0;
            break;
        case RAFT_IO_APPEND_ENTRIES_RESULT:
        case RAFT_IO_REQUEST_VOTE:
        case RAFT_IO_REQUEST_VOTE_RESULT:
        case RAFT_IO_TIMEOUT_NOW:
            ok = len == fixedHeader[type];
            break;
        default:
            tpdbErrf(errmsg, "unknown message type %llu",
                     (unsigned long long)type);
            return TPDB_PROTO;
    }
    if (!ok) {
        tpdbErrf(errmsg, "message type %llu: header length %llu refused",
                 (unsigned long long)type, (unsigned long long)len);
        return TPDB_PROTO;
    }
    w->type = type;
    w->want = (size_t)len;
    w->have = 0;
    return TPDB_OK;
}

/* Length of the printable address (0x21..0x7e) at p, which must end with
 * a NUL within n bytes and be 1..255 long; 0 if it is not one. */
static size_t addressLen(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n && i < 256 && p[i] >= 0x21 && p[i] <= 0x7e) {
        i++;
    }
    return i > 0 && i < 256 && i < n && p[i] == '\0' ? i : 0;
}

/* Checks an encoded configuration of len bytes (padding included). */
static int checkConf(const uint8_t *p, size_t len, char *errmsg)
{
    size_t at = 9;
    uint64_t n;
    if (len < 9 || p[0] != 1) {
        tpdbErrf(errmsg, "configuration: bad format");
        return TPDB_PROTO;
    }
    n = tpdbGet64(p + 1);
    if (n == 0 || n > WIRE_SERVERS_MAX) {
        tpdbErrf(errmsg, "configuration: %llu servers", (unsigned long long)n);
        return TPDB_PROTO;
    }
    for (uint64_t i = 0; i < n; i++) {
        size_t alen;
        if (len - at < 8 + 2 + 1 || tpdbGet64(p + at) == 0) {
            tpdbErrf(errmsg, "configuration: server %llu: truncated or id 0",
                     (unsigned long long)i);
            return TPDB_PROTO;
        }
        at += 8;
        alen = addressLen(p + at, len - at);
        if (alen == 0 || at + alen + 1 >= len ||
            p[at + alen + 1] > RAFT_SPARE) {
            tpdbErrf(errmsg, "configuration: server %llu: bad address or role",
                     (unsigned long long)i);
            return TPDB_PROTO;
        }
        at += alen + 2;
    }
    return TPDB_OK;
}

static int checkAppendEntries(struct tpdb_wire *w, char *errmsg)
{
    const uint8_t *h = w->buf;
    uint64_t n = tpdbGet64(h + 32);
    uint64_t total = 0;
    int rc = checkTerm(w, tpdbGet64(h), "AppendEntries", errmsg);
    if (rc == TPDB_OK) {
        rc = checkIndex(tpdbGet64(h + 8), "AppendEntries prev", errmsg);
    }
    if (rc == TPDB_OK) {
        rc = checkIndex(tpdbGet64(h + 24), "AppendEntries commit", errmsg);
    }
    if (rc != TPDB_OK) {
        return rc;
    }
    if (tpdbGet64(h + 16) > tpdbGet64(h) || n != (w->want - 48) / 16 ||
        tpdbGet64(h + 8) + n > WIRE_INDEX_MAX) {
        tpdbErrf(errmsg,
                 "AppendEntries: %llu entries in a %zu-byte header, "
                 "or prev term after term",
                 (unsigned long long)n, w->want);
        return TPDB_PROTO;
    }
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *e = h + 40 + 16 * i;
        uint32_t len = tpdbGet32(e + 12);
        if (tpdbGet64(e) > tpdbGet64(h) || e[8] < RAFT_COMMAND ||
            e[8] > RAFT_CHANGE || len > w->limits.entry_max ||
            (e[8] == RAFT_CHANGE && len > TPDB_WIRE_CONF_MAX)) {
            tpdbErrf(errmsg,
                     "AppendEntries: entry %llu: term %llu, type %u, "
                     "length %u refused",
                     (unsigned long long)i, (unsigned long long)tpdbGet64(e),
                     e[8], (unsigned)len);
            return TPDB_PROTO;
        }
        total += pad8(len);
    }
    if (total > w->limits.payload_max) {
        tpdbErrf(errmsg, "AppendEntries: payload of %llu bytes refused",
                 (unsigned long long)total);
        return TPDB_PROTO;
    }
    w->n_entries = n;
    w->entry = 0;
    return TPDB_OK;
}

static int checkInstallSnapshot(struct tpdb_wire *w, char *errmsg)
{
    const uint8_t *h = w->buf;
    uint64_t conf_len = tpdbGet64(h + 32);
    uint64_t data_len;
    int rc = checkTerm(w, tpdbGet64(h), "InstallSnapshot", errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    if (checkIndex(tpdbGet64(h + 8), "InstallSnapshot", errmsg) != TPDB_OK ||
        checkIndex(tpdbGet64(h + 24), "InstallSnapshot conf", errmsg) !=
            TPDB_OK) {
        return TPDB_PROTO;
    }
    if (tpdbGet64(h + 16) > tpdbGet64(h) || conf_len == 0 ||
        conf_len > TPDB_WIRE_CONF_MAX || 40 + pad8(conf_len) + 16 != w->want) {
        tpdbErrf(errmsg,
                 "InstallSnapshot: configuration length %llu in a "
                 "%zu-byte header",
                 (unsigned long long)conf_len, w->want);
        return TPDB_PROTO;
    }
    if (checkConf(h + 40, (size_t)pad8(conf_len), errmsg) != TPDB_OK) {
        return TPDB_PROTO;
    }
    data_len = tpdbGet64(h + 40 + pad8(conf_len));
    if (data_len > w->limits.snapshot_max) {
        tpdbErrf(errmsg, "InstallSnapshot: %llu bytes of data refused",
                 (unsigned long long)data_len);
        return TPDB_PROTO;
    }
    w->left = data_len;
    return TPDB_OK;
}

/* Checks the fixed-size headers: their terms and indexes. */
static int checkSmall(struct tpdb_wire *w, char *errmsg)
{
    const uint8_t *h = w->buf;
    int rc = checkTerm(w, tpdbGet64(h), "message", errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    switch (w->type) {
        case RAFT_IO_APPEND_ENTRIES_RESULT:
            rc = checkIndex(tpdbGet64(h + 8), "result", errmsg);
            if (rc == TPDB_OK) {
                rc = checkIndex(tpdbGet64(h + 16), "result", errmsg);
            }
            return rc;
        case RAFT_IO_REQUEST_VOTE:
            if (tpdbGet64(h + 8) == 0 || tpdbGet64(h + 24) > tpdbGet64(h) ||
                tpdbGet64(h + 32) > 3) {
                tpdbErrf(errmsg, "RequestVote: bad candidate, term or flags");
                return TPDB_PROTO;
            }
            return checkIndex(tpdbGet64(h + 16), "RequestVote", errmsg);
        case RAFT_IO_REQUEST_VOTE_RESULT:
            if (tpdbGet64(h + 8) > 1 || tpdbGet64(h + 16) > 3) {
                tpdbErrf(errmsg, "RequestVote result: bad flags");
                return TPDB_PROTO;
            }
            return TPDB_OK;
        default: /* TimeoutNow */
            if (tpdbGet64(h + 16) > tpdbGet64(h)) {
                tpdbErrf(errmsg, "TimeoutNow: last term after term");
                return TPDB_PROTO;
            }
            return checkIndex(tpdbGet64(h + 8), "TimeoutNow", errmsg);
    }
}

/* Grows *buf (capacity *cap) to hold at least n bytes: doubling, but
 * never beyond `most`, the whole unit's size. */
static int reserve(uint8_t **buf,
                   size_t *cap,
                   size_t n,
                   size_t most,
                   char *errmsg)
{
    uint8_t *p;
    size_t c;
    if (n <= *cap) {
        return TPDB_OK;
    }
    c = *cap < 256 ? 256 : *cap * 2;
    c = c < n ? n : c;
    c = c > most ? most : c;
    p = tpdb_realloc(*buf, c);
    if (p == NULL) {
        tpdbErrf(errmsg, "wire: out of memory");
        return TPDB_NOMEM;
    }
    *buf = p;
    *cap = c;
    return TPDB_OK;
}

/* Moves to the next payload part of an AppendEntries, or the next
 * message. */
static void nextEntry(struct tpdb_wire *w)
{
    while (w->entry < w->n_entries) {
        const uint8_t *e = w->buf + 40 + 16 * w->entry;
        uint64_t len = pad8(tpdbGet32(e + 12));
        if (len == 0) {
            w->entry++;
            continue;
        }
        w->left = len;
        w->state = e[8] == RAFT_CHANGE ? S_HOLD : S_PASS;
        w->want = (size_t)len;
        w->have = 0;
        return;
    }
    w->messages++;
    w->state = S_PRE;
    w->have = 0;
}

/* A whole header is in w->buf: checks it, emits preamble and header. */
static int headerDone(struct tpdb_wire *w,
                      tpdb_wire_emit_fn emit,
                      void *arg,
                      char *errmsg)
{
    int rc;
    if (w->type == RAFT_IO_APPEND_ENTRIES) {
        rc = checkAppendEntries(w, errmsg);
    } else if (w->type == RAFT_IO_INSTALL_SNAPSHOT) {
        rc = checkInstallSnapshot(w, errmsg);
    } else {
        rc = checkSmall(w, errmsg);
    }
    if (rc == TPDB_OK) {
        rc = emit(arg, w->pre, sizeof w->pre);
    }
    if (rc == TPDB_OK) {
        rc = emit(arg, w->buf, w->want);
    }
    if (rc != TPDB_OK) {
        return rc;
    }
    if (w->type == RAFT_IO_APPEND_ENTRIES) {
        /* The entry table stays in buf while the payload streams. */
        nextEntry(w);
    } else if (w->type == RAFT_IO_INSTALL_SNAPSHOT && w->left > 0) {
        w->state = S_PASS;
        w->n_entries = 0;
    } else {
        w->messages++;
        w->state = S_PRE;
        w->have = 0;
    }
    return TPDB_OK;
}

/* Gathers bytes into dst up to w->want; returns how many were taken. */
static size_t gather(struct tpdb_wire *w,
                     uint8_t *dst,
                     const uint8_t *p,
                     size_t n)
{
    size_t take = w->want - w->have;
    take = take < n ? take : n;
    memcpy(dst + w->have, p, take);
    w->have += take;
    return take;
}

/* The end of a passed-through part: the next entry or message. */
static void passDone(struct tpdb_wire *w)
{
    if (w->type == RAFT_IO_APPEND_ENTRIES) {
        w->entry++;
        nextEntry(w);
        return;
    }
    w->messages++;
    w->state = S_PRE;
    w->have = 0;
}

/* A configuration entry: held whole, checked, then emitted. */
static int stepHold(struct tpdb_wire *w,
                    const uint8_t *p,
                    size_t n,
                    size_t *used,
                    tpdb_wire_emit_fn emit,
                    void *arg,
                    char *errmsg)
{
    size_t take = w->want - w->have < n ? w->want - w->have : n;
    int rc = reserve(&w->hold, &w->hold_cap, w->have + take, w->want, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    *used = gather(w, w->hold, p, n);
    if (w->have < w->want) {
        return TPDB_OK;
    }
    rc = checkConf(w->hold, w->want, errmsg);
    if (rc == TPDB_OK) {
        rc = emit(arg, w->hold, w->want);
    }
    if (rc == TPDB_OK) {
        w->left = 0;
        passDone(w);
    }
    return rc;
}

/* One step of the feed: consumes some of p, returns how much via *used. */
static int step(struct tpdb_wire *w,
                const uint8_t *p,
                size_t n,
                size_t *used,
                tpdb_wire_emit_fn emit,
                void *arg,
                char *errmsg)
{
    int rc = TPDB_OK;
    size_t take;
    switch (w->state) {
        case S_PRE:
            w->want = sizeof w->pre;
            *used = gather(w, w->pre, p, n);
            if (w->have == w->want) {
                rc = checkPreamble(w, errmsg);
                w->state = S_HDR;
            }
            return rc;
        case S_HDR:
            /* Grow only as far as bytes have come. */
            take = w->want - w->have < n ? w->want - w->have : n;
            rc = reserve(&w->buf, &w->cap, w->have + take, w->want, errmsg);
            if (rc != TPDB_OK) {
                return rc;
            }
            *used = gather(w, w->buf, p, n);
            if (w->have == w->want) {
                rc = headerDone(w, emit, arg, errmsg);
            }
            return rc;
        case S_HOLD:
            return stepHold(w, p, n, used, emit, arg, errmsg);
        default: /* S_PASS */
            take = w->left < n ? (size_t)w->left : n;
            rc = emit(arg, p, take);
            *used = take;
            w->left -= take;
            if (rc == TPDB_OK && w->left == 0) {
                passDone(w);
            }
            return rc;
    }
}

int tpdbWireFeed(struct tpdb_wire *w,
                 const uint8_t *p,
                 size_t n,
                 tpdb_wire_emit_fn emit,
                 void *arg,
                 char *errmsg)
{
    while (n > 0) {
        size_t used = 0;
        int rc = step(w, p, n, &used, emit, arg, errmsg);
        if (rc != TPDB_OK) {
            return rc;
        }
        p += used;
        n -= used;
    }
    return TPDB_OK;
}
