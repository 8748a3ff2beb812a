/*
 * Request authorization on tpdbd's client port (tpdbd_auth.h).
 */
#include "shell/tpdbd_auth.h"

#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "shell/tpdbd_api.h"
#include "shell/tpdbd_log.h"
#include "shell/tpdbd_tokens.h"
#include "shell/tpdbd_txn.h"

/* Actions a read token may do: they change nothing. */
static int isReadAction(const char *action)
{
    static const char *const reads[] = {"status", "metrics", "query",
                                        "local_query"};
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
        if (strcmp(action, reads[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* The role of token in the loaded tokens. */
static int checkToken(struct tpdbd *d, const char *token, char *name)
{
    pthread_rwlock_rdlock(&d->tokens_lock);
    int role = tpdbdTokensCheck(d->tokens, token, name);
    pthread_rwlock_unlock(&d->tokens_lock);
    return role;
}

/* The role of the request's "token" field, checked; -1 with *reply set
 * if the field is unusable, TPDBD_ROLE_NONE if there is none. */
static int roleOfField(struct tpdbd *d, json_t *field, char *name, char **reply)
{
    int role;
    if (field == NULL) {
        return TPDBD_ROLE_NONE;
    }
    if (!json_is_string(field) ||
        strlen(json_string_value(field)) != json_string_length(field) ||
        json_string_length(field) > TPDBD_SESSION_TOKEN_MAX) {
        *reply = tpdbdErrorReply(
            "unauthorized: token must be a string of "
            "at most 80 bytes (tpdbd --make-token)");
        return -1;
    }
    role = checkToken(d, json_string_value(field), name);
    if (role == TPDBD_ROLE_NONE) {
        *reply = tpdbdErrorReply("unauthorized: unknown token");
        return -1;
    }
    return role;
}

char *tpdbdAuthorize(struct tpdbd *d,
                     struct tpdbd_session *sess,
                     json_t *req,
                     const char *action)
{
    char name[TPDBD_TOKEN_NAME_MAX + 1] = "", msg[256];
    char *reply = NULL;
    json_t *field = json_object_get(req, "token");
    if (d->cfg.client_tokens[0] == '\0' || sess == NULL) {
        return NULL;
    }
    int role = roleOfField(d, field, name, &reply);
    if (role < 0) {
        return reply;
    }
    const char *token = field != NULL ? json_string_value(field)
                                      : tpdbdSessionToken(sess, &role);
    if (field == NULL && token[0] != '\0') {
        /* Checked again: a reload may have removed or changed it. */
        role = checkToken(d, token, name);
        if (role == TPDBD_ROLE_NONE) {
            return tpdbdErrorReply(
                "unauthorized: this connection's token "
                "is no longer valid");
        }
    }
    if (role == TPDBD_ROLE_NONE) {
        return tpdbdErrorReply(
            "unauthorized: this node requires a client token: send it in "
            "the request's \"token\" field (tpdb --token or TPDB_TOKEN)");
    }
    if (role < TPDBD_ROLE_WRITE && !isReadAction(action)) {
        snprintf(msg, sizeof msg,
                 "forbidden: action %.32s needs a write token; this token%s%s "
                 "has role %s",
                 action, name[0] ? " " : "", name, tpdbdRoleName(role));
        return tpdbdErrorReply(msg);
    }
    if (field != NULL && !json_is_true(json_object_get(req, "forwarded"))) {
        /* Not for a forwarded request: a follower's kept connection
         * carries requests of many clients, each with its own token. */
        tpdbdSessionSetToken(sess, token, role);
    } else if (field == NULL) {
        json_object_set_new(req, "token", json_string(token));
    }
    return NULL;
}

void tpdbdAuthNodeToken(const struct tpdbd *d, json_t *req)
{
    if (d->node_token[0] != '\0') {
        json_object_set_new(req, "token", json_string(d->node_token));
    }
}

/* Whether "a.b.c.d:port" is on 127.0.0.0/8. */
static int isLoopback(const char *addr)
{
    return strncmp(addr, "127.", 4) == 0;
}

static void logProtection(const struct tpdbd *d)
{
    const struct tpdbd_config *c = &d->cfg;
    if (d->tokens != NULL) {
        tpdbdLog(TPDBD_INFO, "client API on %s requires a token: %u from %s",
                 c->client_listen, tpdbdTokensCount(d->tokens),
                 c->client_tokens);
        if (d->node_token[0] == '\0' && (c->join[0] || c->nmembers > 0)) {
            tpdbdLog(TPDBD_WARN,
                     "--client-tokens without --node-token-file: this "
                     "node's own requests to other members (--join, "
                     "announcing its client address, --role) carry no "
                     "token, and members that require one refuse them");
        }
    } else if (isLoopback(c->client_listen)) {
        tpdbdLog(TPDBD_INFO,
                 "client API on loopback %s without tokens: only this "
                 "machine can reach it (--client-tokens FILE to require "
                 "tokens)",
                 c->client_listen);
    } else {
        tpdbdLog(TPDBD_WARN,
                 "client API on %s without --client-tokens: anyone who "
                 "can reach this port can read and write every database",
                 c->client_listen);
    }
}

int tpdbdAuthSetup(struct tpdbd *d)
{
    char err[1024];
    int rc = 0;
    pthread_rwlock_init(&d->tokens_lock, NULL);
    if (d->cfg.client_tokens[0] != '\0') {
        rc = tpdbdTokensLoad(d->cfg.client_tokens, &d->tokens, err, sizeof err);
        if (rc == -2) {
            snprintf(err, sizeof err, "--client-tokens: out of memory");
        }
    }
    if (rc == 0 && d->cfg.node_token_file[0] != '\0') {
        rc = tpdbdTokensReadSecret(d->cfg.node_token_file, d->node_token, err,
                                   sizeof err);
    }
    if (rc != 0) {
        tpdbdLog(TPDBD_ERROR, "%s", err);
        tpdbdAuthClose(d);
        return -1;
    }
    logProtection(d);
    return 0;
}

void tpdbdAuthReload(struct tpdbd *d)
{
    char err[1024];
    struct tpdbd_tokens *fresh = NULL, *old;
    if (d->cfg.client_tokens[0] == '\0') {
        tpdbdLog(TPDBD_INFO, "SIGHUP: no --client-tokens to reread");
        return;
    }
    int rc = tpdbdTokensLoad(d->cfg.client_tokens, &fresh, err, sizeof err);
    if (rc != 0) {
        tpdbdLog(TPDBD_ERROR, "SIGHUP: %s; the tokens loaded before stay",
                 rc == -2 ? "--client-tokens: out of memory" : err);
        return;
    }
    pthread_rwlock_wrlock(&d->tokens_lock);
    old = d->tokens;
    d->tokens = fresh;
    pthread_rwlock_unlock(&d->tokens_lock);
    tpdbdTokensFree(old);
    tpdbdLog(TPDBD_INFO, "SIGHUP: %u tokens from %s", tpdbdTokensCount(fresh),
             d->cfg.client_tokens);
}

void tpdbdAuthClose(struct tpdbd *d)
{
    tpdbdTokensFree(d->tokens);
    d->tokens = NULL;
    pthread_rwlock_destroy(&d->tokens_lock);
    sodium_memzero(d->node_token, sizeof d->node_token);
}

int tpdbdAuthMakeToken(const struct tpdbd_config *cfg)
{
    char token[TPDBD_TOKEN_LEN + 1], line[256], err[256];
    if (tpdbdTokensMake(cfg->make_token, cfg->token_name, token, line,
                        sizeof line, err, sizeof err) != 0) {
        fprintf(stderr, "ERROR: %s\n", err);
        return 1;
    }
    printf(
        "# token %s (role %s), shown only now: give it to the client\n"
        "%s\n"
        "# append this line to the --client-tokens file (every node's):\n"
        "%s\n",
        cfg->token_name, cfg->make_token, token, line);
    sodium_memzero(token, sizeof token);
    return fflush(stdout) == 0 ? 0 : 1;
}
