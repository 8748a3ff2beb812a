/*
 * Row codec, B+ tree keys and DEFAULT literals of the native TPDB format.
 *
 * Row: col_count u16 LE | NULL bitmap ceil(n/8) bytes, LSB-first | for each
 * non-NULL column a tag (1 INT i64, 2 REAL f64, 3 TEXT u32 len + bytes,
 * 4 BLOB u32 len + bytes, 5 BOOL u8) and its payload, little-endian.
 * Keys compare with memcmp, the shorter first on a tie. Rowids and INTEGER
 * index values are 8 bytes big-endian without a sign flip; TEXT index values
 * are the bytes plus 0x00.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "vfs/tpdbfile/tpdbfile_int.h"

int tfKeyCmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n == 0 ? 0 : memcmp(a, b, n);
    if (c != 0) {
        return c < 0 ? -1 : 1;
    }
    return alen < blen ? -1 : (alen > blen ? 1 : 0);
}

/* Like tfKeyCmp, but a key that starts with the prefix compares equal. */
int tfKeyCmpPrefix(const uint8_t *key,
                   size_t klen,
                   const uint8_t *prefix,
                   size_t plen)
{
    if (klen >= plen) {
        int c = plen == 0 ? 0 : memcmp(key, prefix, plen);
        return c < 0 ? -1 : (c > 0 ? 1 : 0);
    }
    return tfKeyCmp(key, klen, prefix, plen);
}

static void tfBe64(uint64_t v, uint8_t *p)
{
    tpdbPutBe32(p, (uint32_t)(v >> 32));
    tpdbPutBe32(p + 4, (uint32_t)v);
}

void tfRowidKey(int64_t rowid, uint8_t *key)
{
    tfBe64((uint64_t)rowid, key);
}

int64_t tfRowidFromKey(const uint8_t *key)
{
    uint64_t v = ((uint64_t)tpdbGetBe32(key) << 32) | tpdbGetBe32(key + 4);
    return (int64_t)v;
}

/* Decodes one tagged value at row[*pos]; an unknown tag is NULL and
 * consumes nothing, as TrashPandaDB reads it. */
static int tfValueDecode(const uint8_t *row,
                         size_t len,
                         size_t *pos,
                         struct tpdb_value *v,
                         unsigned col,
                         char *errmsg)
{
    size_t p = *pos;
    memset(v, 0, sizeof *v);
    if (p >= len) {
        tpdbErrf(errmsg, "row truncated at column %u", col);
        return TPDB_CORRUPT;
    }
    uint8_t tag = row[p++];
    size_t need = tag == 1 || tag == 2 ? 8 : (tag == 3 || tag == 4 ? 4 : 1);
    if (tag < 1 || tag > 5) {
        *pos = p;
        return TPDB_OK;
    }
    if (len - p < need) {
        tpdbErrf(errmsg, "column %u: value truncated", col);
        return TPDB_CORRUPT;
    }
    v->type = tag;
    if (tag == TPDB_VINT) {
        v->i = (int64_t)tpdbGet64(row + p);
    } else if (tag == TPDB_VREAL) {
        uint64_t bits = tpdbGet64(row + p);
        memcpy(&v->r, &bits, sizeof v->r);
    } else if (tag == TPDB_VBOOL) {
        v->i = row[p] != 0;
    } else {
        uint32_t n = tpdbGet32(row + p);
        if (len - p - 4 < n) {
            tpdbErrf(errmsg, "column %u: length %u past row end", col, n);
            return TPDB_CORRUPT;
        }
        v->base = row + p + 4;
        v->len = n;
        need = 4 + (size_t)n;
    }
    *pos = p + need;
    return TPDB_OK;
}

int tfRowDecode(const uint8_t *row,
                size_t len,
                unsigned ncols,
                const struct tpdb_value *defs,
                struct tpdb_value *vals,
                unsigned *stored,
                char *errmsg)
{
    if (len < 2) {
        tpdbErrf(errmsg, "row shorter than its column count");
        return TPDB_CORRUPT;
    }
    unsigned n = tpdbGet16(row);
    size_t bm = ((size_t)n + 7) / 8;
    if (len - 2 < bm) {
        tpdbErrf(errmsg, "row NULL bitmap truncated (%u columns)", n);
        return TPDB_CORRUPT;
    }
    size_t pos = 2 + bm;
    *stored = n;
    for (unsigned i = 0; i < ncols; i++) {
        if (i >= n) {
            if (defs != NULL) {
                vals[i] = defs[i];
            } else {
                memset(&vals[i], 0, sizeof vals[i]);
            }
            continue;
        }
        if ((row[2 + i / 8] >> (i % 8)) & 1) {
            memset(&vals[i], 0, sizeof vals[i]);
            continue;
        }
        int rc = tfValueDecode(row, len, &pos, &vals[i], i, errmsg);
        if (rc != TPDB_OK) {
            return rc;
        }
    }
    return TPDB_OK;
}

static size_t tfValueSize(const struct tpdb_value *v)
{
    switch (v->type) {
        case TPDB_VINT:
        case TPDB_VREAL:
            return 9;
        case TPDB_VTEXT:
        case TPDB_VBLOB:
            return 5 + v->len;
        case TPDB_VBOOL:
            return 2;
        default:
            return 0;
    }
}

static size_t tfValuePut(const struct tpdb_value *v, uint8_t *p)
{
    p[0] = (uint8_t)v->type;
    if (v->type == TPDB_VINT) {
        tpdbPut64(p + 1, (uint64_t)v->i);
    } else if (v->type == TPDB_VREAL) {
        uint64_t bits;
        memcpy(&bits, &v->r, sizeof bits);
        tpdbPut64(p + 1, bits);
    } else if (v->type == TPDB_VBOOL) {
        p[1] = v->i != 0;
    } else {
        tpdbPut32(p + 1, (uint32_t)v->len);
        if (v->len > 0) {
            memcpy(p + 5, v->base, v->len);
        }
    }
    return tfValueSize(v);
}

int tfRowEncode(const struct tpdb_value *vals,
                unsigned n,
                uint8_t **out,
                size_t *len)
{
    size_t total = 2 + ((size_t)n + 7) / 8;
    for (unsigned i = 0; i < n; i++) {
        if ((vals[i].type == TPDB_VTEXT || vals[i].type == TPDB_VBLOB) &&
            vals[i].len > UINT32_MAX - 16) {
            return TPDB_TOOBIG;
        }
        total += tfValueSize(&vals[i]);
    }
    if (total > 0x7FFFFFFF || n > 0xFFFF) {
        return TPDB_TOOBIG;
    }
    uint8_t *buf = tpdb_calloc(1, total);
    if (buf == NULL) {
        return TPDB_NOMEM;
    }
    tpdbPut16(buf, (uint16_t)n);
    size_t pos = 2 + ((size_t)n + 7) / 8;
    for (unsigned i = 0; i < n; i++) {
        if (vals[i].type < TPDB_VINT || vals[i].type > TPDB_VBOOL) {
            buf[2 + i / 8] |= (uint8_t)(1u << (i % 8));
        } else {
            pos += tfValuePut(&vals[i], buf + pos);
        }
    }
    *out = buf;
    *len = total;
    return TPDB_OK;
}

int tfIndexKeyAppend(const struct tpdb_value *v,
                     uint8_t *buf,
                     size_t cap,
                     size_t *len)
{
    if (v->type == TPDB_VINT || v->type == TPDB_VBOOL) {
        if (cap - *len < 8) {
            return TPDB_TOOBIG;
        }
        tfBe64((uint64_t)v->i, buf + *len);
        *len += 8;
        return TPDB_OK;
    }
    if (v->type != TPDB_VTEXT ||
        (v->len > 0 && memchr(v->base, 0, v->len) != NULL)) {
        return TPDB_INVALID;
    }
    if (cap - *len < v->len + 1) {
        return TPDB_TOOBIG;
    }
    if (v->len > 0) {
        memcpy(buf + *len, v->base, v->len);
    }
    buf[*len + v->len] = 0;
    *len += v->len + 1;
    return TPDB_OK;
}

/* ---- DEFAULT literals -------------------------------------------------- */

static const char *tfSkipSpace(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') {
        s++;
    }
    return s;
}

static int tfHexDigit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* 'text' with '' escapes, or X'hex'; returns the end or NULL. */
static const char *tfQuoted(const char *s,
                            int blob,
                            uint8_t *scratch,
                            struct tpdb_value *out)
{
    size_t n = 0;
    s++;
    for (;; s++) {
        if (*s == '\0') {
            return NULL;
        }
        if (*s == '\'' && s[1] != '\'') {
            break;
        }
        if (*s == '\'') {
            s++;
        }
        scratch[n++] = (uint8_t)*s;
    }
    if (blob) {
        if (n % 2 != 0) {
            return NULL;
        }
        for (size_t i = 0; i < n / 2; i++) {
            int hi = tfHexDigit((char)scratch[2 * i]);
            int lo = tfHexDigit((char)scratch[2 * i + 1]);
            if (hi < 0 || lo < 0) {
                return NULL;
            }
            scratch[i] = (uint8_t)(hi * 16 + lo);
        }
        n /= 2;
    }
    out->type = blob ? TPDB_VBLOB : TPDB_VTEXT;
    out->base = scratch;
    out->len = n;
    return s + 1;
}

static int tfWordIs(const char *s, const char *w, const char **end)
{
    size_t n = strlen(w);
    if (strncasecmp(s, w, n) != 0) {
        return 0;
    }
    char c = s[n];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
        (c >= '0' && c <= '9')) {
        return 0;
    }
    *end = s + n;
    return 1;
}

static const char *tfNumber(const char *s, int neg, struct tpdb_value *out)
{
    char *end = NULL;
    int isreal = 0;
    const char *p = s;
    while ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E' ||
           ((*p == '+' || *p == '-') && (p[-1] == 'e' || p[-1] == 'E'))) {
        isreal |= *p == '.' || *p == 'e' || *p == 'E';
        p++;
    }
    if (p == s) {
        return NULL;
    }
    if (!isreal) {
        errno = 0;
        unsigned long long u = strtoull(s, &end, 10);
        if (end == p && errno == 0 &&
            u <= (unsigned long long)INT64_MAX + neg) {
            out->type = TPDB_VINT;
            out->i = neg ? (int64_t)(0 - u) : (int64_t)u;
            return p;
        }
    }
    double d = strtod(s, &end);
    if (end != p) {
        return NULL;
    }
    out->type = TPDB_VREAL;
    out->r = neg ? -d : d;
    return p;
}

/* One literal: NULL, TRUE/FALSE, number, string, blob, in parentheses. */
static const char *tfLiteral(const char *s,
                             uint8_t *scratch,
                             struct tpdb_value *out,
                             int depth)
{
    const char *end = NULL;
    int neg = 0;
    s = tfSkipSpace(s);
    if (*s == '(' && depth < 8) {
        end = tfLiteral(s + 1, scratch, out, depth + 1);
        end = end == NULL ? NULL : tfSkipSpace(end);
        return end != NULL && *end == ')' ? end + 1 : NULL;
    }
    if (*s == '\'') {
        return tfQuoted(s, 0, scratch, out);
    }
    if ((*s == 'x' || *s == 'X') && s[1] == '\'') {
        return tfQuoted(s + 1, 1, scratch, out);
    }
    if (tfWordIs(s, "NULL", &end)) {
        out->type = TPDB_VNULL;
        return end;
    }
    if (tfWordIs(s, "TRUE", &end) || tfWordIs(s, "FALSE", &end)) {
        out->type = TPDB_VBOOL;
        out->i = (*s == 't' || *s == 'T');
        return end;
    }
    if (*s == '-' || *s == '+') {
        neg = *s == '-';
        s = tfSkipSpace(s + 1);
    }
    return tfNumber(s, neg, out);
}

int tpdb_default_eval(const char *sql, uint8_t *scratch, struct tpdb_value *out)
{
    memset(out, 0, sizeof *out);
    if (sql == NULL) {
        return TPDB_OK;
    }
    const char *end = tfLiteral(sql, scratch, out, 0);
    if (end == NULL || *tfSkipSpace(end) != '\0') {
        memset(out, 0, sizeof *out);
        out->type = TPDB_VTEXT;
        out->base = (const uint8_t *)sql;
        out->len = strlen(sql);
    }
    return TPDB_OK;
}
