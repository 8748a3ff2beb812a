/*
 * tpdbd's client tokens (--client-tokens FILE): bearer secrets with a role,
 * kept in the file only as hashes. A token is "tpdb_" and 64 lowercase hex
 * digits (32 random bytes); the file holds one line per token:
 *
 *   NAME ROLE blake2b:HASH      NAME: 1-64 of [A-Za-z0-9_.@-], unique
 *                               ROLE: read or write
 *                               HASH: 64 hex digits, BLAKE2b-256 of the
 *                                     whole token string (libsodium's
 *                                     crypto_generichash, no key)
 *
 * Blank lines and lines starting with '#' are ignored. The secrets are
 * random, so an unsalted fast hash is enough: the file does not let anyone
 * recover or forge a token. Lookups compare every entry in constant time.
 * A loaded table is read-only and may be used by many threads at once.
 */
#ifndef TPDBD_TOKENS_H
#define TPDBD_TOKENS_H

#include <stddef.h>

#define TPDBD_TOKEN_PREFIX "tpdb_"
/* Length of a token string without NUL: the prefix and 64 hex digits. */
#define TPDBD_TOKEN_LEN (5 + 64)
#define TPDBD_TOKEN_NAME_MAX 64

/* Roles, ordered: a role allows everything a smaller one does. */
enum { TPDBD_ROLE_NONE = 0, TPDBD_ROLE_READ = 1, TPDBD_ROLE_WRITE = 2 };

struct tpdbd_tokens;

/* Loads the tokens file at path. Refuses a file that is not a regular
 * file, that its group or others may read or write (it must be chmod
 * 0600 or 0400), that holds no token, or any malformed or duplicate line
 * (the message names the line number). Returns 0 with *out set (caller
 * frees with tpdbdTokensFree), or -1 with the whole message in err (size
 * bytes); -2 if out of memory. */
int tpdbdTokensLoad(const char *path,
                    struct tpdbd_tokens **out,
                    char *err,
                    size_t size);

/* Frees t; NULL is a no-op. */
void tpdbdTokensFree(struct tpdbd_tokens *t);

/* Number of tokens in t. */
unsigned tpdbdTokensCount(const struct tpdbd_tokens *t);

/* The role of token (NUL-terminated, any bytes, borrowed) in t:
 * TPDBD_ROLE_NONE if it is not one of t's tokens. If name is not NULL it
 * gets the token's NAME (TPDBD_TOKEN_NAME_MAX + 1 bytes; "" if none). */
int tpdbdTokensCheck(const struct tpdbd_tokens *t,
                     const char *token,
                     char *name);

/* Makes a new random token for role ("read" or "write") and name (1-64
 * of [A-Za-z0-9_.@-]): token gets the secret (TPDBD_TOKEN_LEN + 1 bytes),
 * line the tokens-file line without newline (at least 256 bytes). Returns
 * 0, or -1 with the reason in err (size bytes). */
int tpdbdTokensMake(const char *role,
                    const char *name,
                    char *token,
                    char *line,
                    size_t lineSize,
                    char *err,
                    size_t size);

/* Reads a token secret (the first line of the file at path, which must
 * be private like a tokens file) into token (TPDBD_TOKEN_LEN + 1 bytes).
 * Returns 0, or -1 with the whole message in err (size bytes). */
int tpdbdTokensReadSecret(const char *path,
                          char *token,
                          char *err,
                          size_t size);

/* "read", "write" or "none" for a TPDBD_ROLE_*; static storage. */
const char *tpdbdRoleName(int role);

#endif /* TPDBD_TOKENS_H */
