/*
 * tpdbd's client tokens (tpdbd_tokens.h): the tokens file parser, the
 * constant-time lookup and the maker of new tokens, on libsodium.
 */
#include "shell/tpdbd_tokens.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#define HASH_LEN 32
#define HASH_TAG "blake2b:"
#define LINE_MAX_LEN 512
#define NAME_CHARS \
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@-"

struct entry {
    char name[TPDBD_TOKEN_NAME_MAX + 1];
    int role;
    unsigned char hash[HASH_LEN];
};

struct tpdbd_tokens {
    struct entry *entries;
    unsigned n, cap;
};

const char *tpdbdRoleName(int role)
{
    return role == TPDBD_ROLE_WRITE  ? "write"
           : role == TPDBD_ROLE_READ ? "read"
                                     : "none";
}

static int roleOf(const char *s)
{
    return strcmp(s, "write") == 0  ? TPDBD_ROLE_WRITE
           : strcmp(s, "read") == 0 ? TPDBD_ROLE_READ
                                    : TPDBD_ROLE_NONE;
}

static int nameValid(const char *s)
{
    size_t len = strlen(s);
    return len >= 1 && len <= TPDBD_TOKEN_NAME_MAX &&
           strspn(s, NAME_CHARS) == len;
}

static void hashToken(const char *token, unsigned char *hash)
{
    crypto_generichash(hash, HASH_LEN, (const unsigned char *)token,
                       strlen(token), NULL, 0);
}

/* Opens path for reading and checks it is a private regular file; returns
 * the stream or NULL with err set. */
static FILE *openPrivate(const char *flag,
                         const char *path,
                         char *err,
                         size_t size)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    FILE *f;
    if (fd < 0) {
        snprintf(err, size, "%s %s: %s", flag, path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, size, "%s %s: not a regular file", flag, path);
        close(fd);
        return NULL;
    }
    if ((st.st_mode & 077) != 0) {
        snprintf(err, size,
                 "%s %s: mode %04o lets other users read or change it: "
                 "chmod 600 %s",
                 flag, path, (unsigned)(st.st_mode & 07777), path);
        close(fd);
        return NULL;
    }
    if ((f = fdopen(fd, "r")) == NULL) {
        snprintf(err, size, "%s %s: %s", flag, path, strerror(errno));
        close(fd);
    }
    return f;
}

/* Parses one line's fields into e; returns NULL or the reason. */
static const char *parseFields(char *line, struct entry *e)
{
    char *save = NULL;
    char *name = strtok_r(line, " \t", &save);
    char *role = strtok_r(NULL, " \t", &save);
    char *hash = strtok_r(NULL, " \t", &save);
    size_t binLen = 0;
    if (name == NULL || role == NULL || hash == NULL ||
        strtok_r(NULL, " \t", &save) != NULL) {
        return "expected NAME ROLE blake2b:HASH";
    }
    if (!nameValid(name)) {
        return "NAME must be 1-64 of letters, digits, '_', '.', '@', '-'";
    }
    if ((e->role = roleOf(role)) == TPDBD_ROLE_NONE) {
        return "ROLE must be read or write";
    }
    if (strncmp(hash, HASH_TAG, strlen(HASH_TAG)) != 0 ||
        strlen(hash + strlen(HASH_TAG)) != 2 * HASH_LEN ||
        sodium_hex2bin(e->hash, HASH_LEN, hash + strlen(HASH_TAG), 2 * HASH_LEN,
                       NULL, &binLen, NULL) != 0 ||
        binLen != HASH_LEN) {
        return "HASH must be blake2b: and 64 hex digits (tpdbd "
               "--make-token prints the line)";
    }
    snprintf(e->name, sizeof e->name, "%s", name);
    return NULL;
}

/* Why e cannot join t (a duplicate name or hash), or NULL. */
static const char *duplicate(const struct tpdbd_tokens *t,
                             const struct entry *e)
{
    for (unsigned i = 0; i < t->n; i++) {
        if (strcmp(t->entries[i].name, e->name) == 0) {
            return "NAME already used on an earlier line";
        }
        if (sodium_memcmp(t->entries[i].hash, e->hash, HASH_LEN) == 0) {
            return "the same token is already on an earlier line";
        }
    }
    return NULL;
}

static int append(struct tpdbd_tokens *t, const struct entry *e)
{
    if (t->n == t->cap) {
        unsigned cap = t->cap ? 2 * t->cap : 8;
        struct entry *grown = realloc(t->entries, cap * sizeof *grown);
        if (grown == NULL) {
            return -1;
        }
        t->entries = grown;
        t->cap = cap;
    }
    t->entries[t->n++] = *e;
    return 0;
}

/* Parses every line of f into t; returns 0, -1 with err, -2 (no memory). */
static int parseAll(FILE *f,
                    const char *path,
                    struct tpdbd_tokens *t,
                    char *err,
                    size_t size)
{
    char line[LINE_MAX_LEN + 2];
    unsigned lineno = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        struct entry e;
        const char *why;
        size_t len = strlen(line);
        lineno++;
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            snprintf(err, size,
                     "--client-tokens %s: line %u: longer than %d "
                     "bytes",
                     path, lineno, LINE_MAX_LEN);
            return -1;
        }
        line[strcspn(line, "\r\n")] = '\0';
        if (line[strspn(line, " \t")] == '\0' ||
            line[strspn(line, " \t")] == '#') {
            continue;
        }
        if ((why = parseFields(line, &e)) == NULL) {
            why = duplicate(t, &e);
        }
        if (why != NULL) {
            snprintf(err, size, "--client-tokens %s: line %u: %s", path, lineno,
                     why);
            return -1;
        }
        if (append(t, &e) != 0) {
            return -2;
        }
    }
    if (ferror(f)) {
        snprintf(err, size, "--client-tokens %s: read error", path);
        return -1;
    }
    if (t->n == 0) {
        snprintf(err, size,
                 "--client-tokens %s: no token in the file "
                 "(make one with tpdbd --make-token write)",
                 path);
        return -1;
    }
    return 0;
}

int tpdbdTokensLoad(const char *path,
                    struct tpdbd_tokens **out,
                    char *err,
                    size_t size)
{
    struct tpdbd_tokens *t;
    FILE *f;
    int rc;
    *out = NULL;
    if (sodium_init() < 0) {
        snprintf(err, size, "--client-tokens: libsodium failed to start");
        return -1;
    }
    if ((f = openPrivate("--client-tokens", path, err, size)) == NULL) {
        return -1;
    }
    if ((t = calloc(1, sizeof *t)) == NULL) {
        fclose(f);
        return -2;
    }
    rc = parseAll(f, path, t, err, size);
    fclose(f);
    if (rc != 0) {
        tpdbdTokensFree(t);
        return rc;
    }
    *out = t;
    return 0;
}

void tpdbdTokensFree(struct tpdbd_tokens *t)
{
    if (t != NULL) {
        sodium_memzero(t->entries, t->cap * sizeof *t->entries);
        free(t->entries);
        free(t);
    }
}

unsigned tpdbdTokensCount(const struct tpdbd_tokens *t)
{
    return t->n;
}

int tpdbdTokensCheck(const struct tpdbd_tokens *t,
                     const char *token,
                     char *name)
{
    unsigned char hash[HASH_LEN];
    int role = TPDBD_ROLE_NONE;
    unsigned found = 0;
    hashToken(token, hash);
    /* Every entry is compared, so the time taken does not say which
     * entry (if any) matched; hashes are unique, so at most one does. */
    for (unsigned i = 0; i < t->n; i++) {
        if (sodium_memcmp(t->entries[i].hash, hash, HASH_LEN) == 0) {
            role = t->entries[i].role;
            found = i;
        }
    }
    if (name != NULL) {
        snprintf(name, TPDBD_TOKEN_NAME_MAX + 1, "%s",
                 role != TPDBD_ROLE_NONE ? t->entries[found].name : "");
    }
    return role;
}

int tpdbdTokensMake(const char *role,
                    const char *name,
                    char *token,
                    char *line,
                    size_t lineSize,
                    char *err,
                    size_t size)
{
    unsigned char secret[32], hash[HASH_LEN];
    char hex[2 * HASH_LEN + 1];
    if (sodium_init() < 0) {
        snprintf(err, size, "libsodium failed to start");
        return -1;
    }
    if (roleOf(role) == TPDBD_ROLE_NONE) {
        snprintf(err, size,
                 "--make-token: role must be read or write, not "
                 "'%.32s'",
                 role);
        return -1;
    }
    if (!nameValid(name)) {
        snprintf(err, size,
                 "--token-name: must be 1-64 of letters, digits, "
                 "'_', '.', '@', '-'");
        return -1;
    }
    randombytes_buf(secret, sizeof secret);
    sodium_bin2hex(hex, sizeof hex, secret, sizeof secret);
    snprintf(token, TPDBD_TOKEN_LEN + 1, "%s%s", TPDBD_TOKEN_PREFIX, hex);
    sodium_memzero(secret, sizeof secret);
    hashToken(token, hash);
    sodium_bin2hex(hex, sizeof hex, hash, sizeof hash);
    snprintf(line, lineSize, "%s %s %s%s", name, role, HASH_TAG, hex);
    return 0;
}

/* Whether s is a token as tpdbdTokensMake writes them. */
static int tokenShaped(const char *s)
{
    size_t plen = strlen(TPDBD_TOKEN_PREFIX);
    return strlen(s) == TPDBD_TOKEN_LEN &&
           strncmp(s, TPDBD_TOKEN_PREFIX, plen) == 0 &&
           strspn(s + plen, "0123456789abcdef") == TPDBD_TOKEN_LEN - plen;
}

int tpdbdTokensReadSecret(const char *path, char *token, char *err, size_t size)
{
    char line[LINE_MAX_LEN + 2] = "";
    FILE *f = openPrivate("--node-token-file", path, err, size);
    if (f == NULL) {
        return -1;
    }
    if (fgets(line, sizeof line, f) == NULL) {
        line[0] = '\0';
    }
    fclose(f);
    line[strcspn(line, " \t\r\n")] = '\0';
    if (!tokenShaped(line)) {
        snprintf(err, size,
                 "--node-token-file %s: the first line must be a token "
                 "(tpdb_ and 64 hex digits, as tpdbd --make-token prints)",
                 path);
        sodium_memzero(line, sizeof line);
        return -1;
    }
    snprintf(token, TPDBD_TOKEN_LEN + 1, "%s", line);
    sodium_memzero(line, sizeof line);
    return 0;
}
