/*
 * The tpdb shell's dot commands (tpdb_shell_int.h) that are not about the
 * cluster: output (.mode .headers .output), schema (.tables .schema
 * .indexes), input (.read), behaviour (.timer .bail .consistency), .help
 * and .quit. The cluster commands live in tpdb_shell_cluster.c.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "shell/tpdb_shell_int.h"

#define ARGS_MAX 16

static const char helpText[] =
    ".backup FILE             tpdbd: back the database up to FILE (an "
    "absolute\n"
    "                         path on the node); local: copy it to FILE\n"
    ".backup --local FILE     tpdbd: the node streams the copy, written to\n"
    "                         FILE here (checksum verified)\n"
    ".bail on|off             stop after an error (off)\n"
    ".checkpoint              checkpoint the database on every node\n"
    ".consistency local|leader reads on this node (local_query) or on the\n"
    "                         leader, linearizable (query; the default)\n"
    ".exit, .quit             leave the shell (also Ctrl-D)\n"
    ".headers on|off          column names in list, csv and column mode\n"
    ".help                    this text\n"
    ".indexes [TABLE]         index names\n"
    ".join ID RAFT CLIENT     record a member's id and addresses (tpdbd "
    "join)\n"
    ".leader                  the leader and its client address\n"
    ".members                 the members and their roles\n"
    ".mode MODE               list column box table csv json line\n"
    ".output [FILE]           send results to FILE, or back to stdout\n"
    ".read FILE               run the SQL and commands in FILE\n"
    ".remove ID               remove member ID from the cluster\n"
    ".schema [PATTERN]        CREATE statements\n"
    ".status                  every member: role, term, indexes, lag\n"
    ".tables [PATTERN]        table and view names\n"
    ".timer on|off            print the time each statement took\n"
    ".transfer [ID|any]       hand leadership to ID (default any voter)\n"
    "\n"
    "SQL ends with ';' and may span lines. BEGIN ... COMMIT typed by hand\n"
    "is one interactive transaction on the leader. Ctrl-C cancels what is\n"
    "typed or waited for; Ctrl-D leaves.\n";

/* Splits line into at most ARGS_MAX words (quotes group, as in sqlite3).
 * Words point into buf. Returns the count. */
static int splitArgs(const char *line, char *buf, size_t size, char **argv)
{
    int argc = 0;
    size_t j = 0;
    const char *p = line;
    while (*p != '\0' && argc < ARGS_MAX && j + 1 < size) {
        while (isspace((unsigned char)*p)) {
            p++;
        }
        if (*p == '\0') {
            break;
        }
        argv[argc++] = buf + j;
        char q = *p == '\'' || *p == '"' ? *p++ : '\0';
        while (*p != '\0' && j + 1 < size &&
               (q != '\0' ? *p != q : !isspace((unsigned char)*p))) {
            buf[j++] = *p++;
        }
        p += q != '\0' && *p == q;
        buf[j++] = '\0';
    }
    return argc;
}

/* on/off, yes/no, true/false, 1/0: returns 1, 0 or -1. */
static int boolArg(const char *a)
{
    static const char *const on[] = {"on", "yes", "true", "1"};
    static const char *const off[] = {"off", "no", "false", "0"};
    for (int i = 0; i < 4; i++) {
        if (sqlite3_stricmp(a, on[i]) == 0) {
            return 1;
        }
        if (sqlite3_stricmp(a, off[i]) == 0) {
            return 0;
        }
    }
    return -1;
}

static int setBool(int *flag, int argc, char **argv)
{
    int v = argc == 2 ? boolArg(argv[1]) : -1;
    if (v < 0) {
        shellError("usage: %s on|off", argv[0]);
        return -1;
    }
    *flag = v;
    return 0;
}

/* Runs sql (read-only, made here) and returns its result or NULL. */
static struct tpdb_result *query(struct shell *sh, const char *sql)
{
    char err[SHELL_ERR_MAX] = "";
    struct tpdb_result *res = NULL;
    int rc = sh->remote != NULL
                 ? remoteExec(sh->remote, sql, sh->leader_reads, &res, err,
                              sizeof err)
                 : localExec(sh->local, sql, &res, err, sizeof err);
    if (rc != 0) {
        shellError("%s", err);
        return NULL;
    }
    if (res == NULL) {
        res = tpdbResultNew(1);
    }
    return res;
}

/* Prints the first column of res in columns across 80 characters, as
 * sqlite3's .tables. */
static void printNames(FILE *out, const struct tpdb_result *res)
{
    size_t n = res->nrows, maxlen = 0;
    for (size_t i = 0; i < n; i++) {
        const char *z = res->cells[i * (size_t)res->ncols].text;
        size_t len = z != NULL ? strlen(z) : 0;
        maxlen = len > maxlen ? len : maxlen;
    }
    size_t cols = 80 / (maxlen + 2);
    cols = cols < 1 ? 1 : cols;
    size_t rows = (n + cols - 1) / cols;
    for (size_t i = 0; i < rows; i++) {
        for (size_t j = i; j < n; j += rows) {
            const char *z = res->cells[j * (size_t)res->ncols].text;
            fprintf(out, "%s%-*s", j < rows ? "" : "  ", (int)maxlen,
                    z != NULL ? z : "");
        }
        fputc('\n', out);
    }
}

static int listNames(struct shell *sh, const char *sql)
{
    struct tpdb_result *res = sql != NULL ? query(sh, sql) : NULL;
    if (res == NULL) {
        return -1;
    }
    printNames(sh->out, res);
    tpdbResultFree(res);
    return 0;
}

static int cmdTables(struct shell *sh, int argc, char **argv, int indexes)
{
    char *sql = sqlite3_mprintf(
        "SELECT name FROM sqlite_schema WHERE type IN (%s) AND name NOT "
        "LIKE 'sqlite_%%' AND %s LIKE %Q ORDER BY 1",
        indexes ? "'index'" : "'table','view'", indexes ? "tbl_name" : "name",
        argc > 1 ? argv[1] : "%");
    int rc = listNames(sh, sql);
    sqlite3_free(sql);
    return rc;
}

static int cmdSchema(struct shell *sh, int argc, char **argv)
{
    char *sql = sqlite3_mprintf(
        "SELECT sql || ';' FROM sqlite_schema WHERE sql IS NOT NULL AND name "
        "NOT LIKE 'sqlite_%%' AND tbl_name LIKE %Q ORDER BY rowid",
        argc > 1 ? argv[1] : "%");
    struct tpdb_result *res = sql != NULL ? query(sh, sql) : NULL;
    sqlite3_free(sql);
    if (res == NULL) {
        return -1;
    }
    for (size_t i = 0; i < res->nrows; i++) {
        fprintf(sh->out, "%s\n", res->cells[i].text);
    }
    tpdbResultFree(res);
    return 0;
}

static int cmdMode(struct shell *sh, int argc, char **argv)
{
    int m = argc == 2 ? tpdbModeByName(argv[1]) : -1;
    if (argc == 1) {
        fprintf(sh->out, "current output mode: %s\n", tpdbModeName(sh->mode));
        return 0;
    }
    if (m < 0) {
        shellError(
            "mode should be one of: list column box table csv json "
            "line");
        return -1;
    }
    sh->mode = m;
    if (m == TPDB_MODE_COLUMN && !sh->headers_set) {
        sh->headers = 1;
    }
    return 0;
}

static int cmdOutput(struct shell *sh, int argc, char **argv)
{
    FILE *f = stdout;
    if (argc > 2) {
        shellError("usage: .output [FILE]");
        return -1;
    }
    if (argc == 2 && strcmp(argv[1], "stdout") != 0 &&
        (f = fopen(argv[1], "w")) == NULL) {
        shellError("cannot open \"%s\"", argv[1]);
        return -1;
    }
    if (sh->out != stdout) {
        fclose(sh->out);
    }
    sh->out = f;
    return 0;
}

static int cmdRead(struct shell *sh, int argc, char **argv)
{
    FILE *f = argc == 2 ? fopen(argv[1], "r") : NULL;
    if (argc != 2) {
        shellError("usage: .read FILE");
        return -1;
    }
    if (f == NULL) {
        shellError("cannot open \"%s\"", argv[1]);
        return -1;
    }
    int saved = sh->batch;
    sh->batch = 1; /* a script stops at its first error, as with -bail */
    int rc = shellRunFile(sh, f);
    sh->batch = saved;
    fclose(f);
    return rc;
}

static int cmdConsistency(struct shell *sh, int argc, char **argv)
{
    if (argc == 1) {
        fprintf(sh->out, "%s\n", sh->leader_reads ? "leader" : "local");
        return 0;
    }
    if (argc != 2 ||
        (strcmp(argv[1], "local") != 0 && strcmp(argv[1], "leader") != 0)) {
        shellError("usage: .consistency local|leader");
        return -1;
    }
    sh->leader_reads = strcmp(argv[1], "leader") == 0;
    return 0;
}

static int dispatch(struct shell *sh, int argc, char **argv)
{
    const char *c = argv[0];
    if (strcmp(c, "mode") == 0) {
        return cmdMode(sh, argc, argv);
    }
    if (strcmp(c, "headers") == 0 || strcmp(c, "header") == 0) {
        sh->headers_set = 1;
        return setBool(&sh->headers, argc, argv);
    }
    if (strcmp(c, "tables") == 0 || strcmp(c, "indexes") == 0 ||
        strcmp(c, "indices") == 0) {
        return cmdTables(sh, argc, argv, c[0] == 'i');
    }
    if (strcmp(c, "schema") == 0) {
        return cmdSchema(sh, argc, argv);
    }
    if (strcmp(c, "read") == 0) {
        return cmdRead(sh, argc, argv);
    }
    if (strcmp(c, "output") == 0) {
        return cmdOutput(sh, argc, argv);
    }
    if (strcmp(c, "timer") == 0) {
        return setBool(&sh->timer, argc, argv);
    }
    if (strcmp(c, "bail") == 0) {
        return setBool(&sh->bail, argc, argv);
    }
    if (strcmp(c, "consistency") == 0) {
        return cmdConsistency(sh, argc, argv);
    }
    if (strcmp(c, "help") == 0) {
        fputs(helpText, sh->out);
        return 0;
    }
    if (strcmp(c, "quit") == 0 || strcmp(c, "exit") == 0) {
        sh->exit_requested = 1;
        return 0;
    }
    int rc = shellClusterDot(sh, argc, argv);
    if (rc == 1) {
        shellError("unknown command: \".%s\". Enter \".help\" for help", c);
        return -1;
    }
    return rc;
}

int shellDot(struct shell *sh, const char *line)
{
    char buf[4096];
    char *argv[ARGS_MAX];
    int argc = splitArgs(line + 1, buf, sizeof buf, argv);
    if (argc == 0) {
        return 0;
    }
    int rc = dispatch(sh, argc, argv);
    fflush(sh->out);
    return rc;
}
