/*
 * Internals shared by the tpdb shell's modules: the shell's state, the
 * two back ends (a remote tpdbd node, tpdb_shell_remote.c; a local
 * database, tpdb_shell_local.c), dot commands (tpdb_shell_cmd.c) and
 * cluster commands (tpdb_shell_cluster.c). Single-threaded; the only
 * state a signal handler touches is shellInterrupted.
 */
#ifndef TPDB_SHELL_INT_H
#define TPDB_SHELL_INT_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#include "shell/tpdb_shell_render.h"

#define SHELL_ERR_MAX 1024

/* Set by SIGINT (Ctrl-C); cleared before each line read at a terminal. */
extern volatile sig_atomic_t shellInterrupted;

struct remote;
struct local;
struct sqlite3;

/* The local database a Ctrl-C interrupts (sqlite3_interrupt() is safe
 * from a signal handler), or NULL: set by localOpen(), cleared by
 * localClose(). */
extern struct sqlite3 *shellLocalDb;

struct shell {
    int interactive;       /* a person at a terminal: prompts, history */
    int batch;             /* not interactive: stop at the first error */
    int bail;              /* .bail on */
    int timer;             /* .timer on */
    int headers;           /* .headers */
    int headers_set;       /* given explicitly: .mode column keeps it */
    int mode;              /* TPDB_MODE_* */
    FILE *out;             /* stdout or the .output file */
    int leader_reads;      /* .consistency leader (query) or local */
    const char *db;        /* --db NAME.db for tpdbd's "db" field, or NULL */
    const char *token;     /* -token or $TPDB_TOKEN (argv/environ), or NULL */
    struct remote *remote; /* exactly one of remote and local is set */
    struct local *local;
    int exit_requested; /* .quit / .exit */
};

/* Prints "Error: msg" on stderr. */
void shellError(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Runs sql, one or more complete statements, printing each result.
 * Returns 0, or -1 after printing the first error (the rest is skipped). */
int shellRunSql(struct shell *sh, const char *sql);

/* Feeds the lines of f (a .read file or stdin) through the shell. Returns
 * 0, or -1 if a statement failed and the shell stops on errors. */
int shellRunFile(struct shell *sh, FILE *f);

/* Runs one dot command line. Returns 0 or -1 (error printed). */
int shellDot(struct shell *sh, const char *line);

/* Cluster dot commands (.status .leader .members .join .remove .transfer
 * .checkpoint .backup): returns 0/-1 when argv[0] is one of them, 1 if it
 * is not. */
int shellClusterDot(struct shell *sh, int argc, char **argv);

/* .backup --local FILE at a tpdbd node: the node streams a consistent
 * copy of the database (sh->db, or data.db) back, written to FILE here,
 * checked against the stream's size and SHA-256, fsynced and renamed into
 * place; on any failure nothing is left at FILE (nor FILE.partial).
 * Returns 0 or -1 (error printed). tpdb_shell_backup.c. */
int shellBackupStream(struct shell *sh, const char *path);

/* The remote back end: a connection to a tpdbd node that fails over to
 * the other members it learned from status. token (NULL: none) is sent
 * with every request; addr, db and token are borrowed for r's life. */
struct remote *remoteOpen(const char *addr,
                          const char *db,
                          const char *token,
                          volatile sig_atomic_t *cancel,
                          char *err,
                          size_t size);
void remoteClose(struct remote *r);

/* Runs one statement: reads by query (leader_reads) or local_query,
 * writes by propose, BEGIN/COMMIT/ROLLBACK as an interactive transaction.
 * Returns 0 with *res (NULL if the statement returns no rows; caller
 * frees) or -1 with err set. */
int remoteExec(struct remote *r,
               const char *sql,
               int leader_reads,
               struct tpdb_result **res,
               char *err,
               size_t size);

/* Sends a cluster request (req is not consumed) on the current node,
 * failing over to another member only if nothing was sent. Returns 0 with
 * the ok reply in *reply (caller decrefs), or -1 with err set (an unknown
 * action says so). */
int remoteRequest(struct remote *r,
                  json_t *req,
                  json_t **reply,
                  char *err,
                  size_t size);

/* status of the member at addr on a new short-lived connection (NULL if
 * it does not answer), or of the current node when addr is NULL. */
json_t *remoteStatusOf(struct remote *r, const char *addr);

/* The address the shell talks to now. */
const char *remoteAddr(const struct remote *r);

/* Whether an interactive transaction is open. */
int remoteInTxn(const struct remote *r);

/* The local back end: a database opened through the tpdb VFS. */
struct local *localOpen(const char *target, char *err, size_t size);
void localClose(struct local *l);
int localExec(struct local *l,
              const char *sql,
              struct tpdb_result **res,
              char *err,
              size_t size);

/* tpdb_status() of the local node as JSON (NULL if none). */
json_t *localStatus(struct local *l);

/* Copies the main database into path (a plain SQLite file). */
int localBackup(struct local *l, const char *path, char *err, size_t size);

/* Whether the local database is in a transaction (for the prompt). */
int localInTxn(const struct local *l);

#endif /* TPDB_SHELL_INT_H */
