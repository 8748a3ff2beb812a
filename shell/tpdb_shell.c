/*
 * The tpdb shell (tpdb_shell.h): options, the input loop (libedit with
 * history in ~/.tpdb_history at a terminal, plain lines otherwise),
 * statements gathered until sqlite3_complete() says they end, split one
 * by one for the back end, results rendered in the current mode, and
 * Ctrl-C, which cancels what is typed or waited for, not the shell.
 */
#include <errno.h>
#include <histedit.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "shell/tpdb_client.h"
#include "shell/tpdb_shell.h"
#include "shell/tpdb_shell_int.h"

#define DEFAULT_ADDR "127.0.0.1:9002"

volatile sig_atomic_t shellInterrupted;

/* Statement text gathered across lines. */
struct pending {
    char *buf;
    size_t len, cap;
};

void shellError(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("Error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void onSigint(int sig)
{
    (void)sig;
    shellInterrupted = 1;
    if (shellLocalDb != NULL) {
        sqlite3_interrupt(shellLocalDb);
    }
}

/* Length of the first statement of sql (through its ';'), or of all of
 * sql if no statement ends in it. */
static size_t statementLength(const char *sql)
{
    size_t len = strlen(sql);
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        return len;
    }
    memcpy(copy, sql, len + 1);
    for (size_t i = 0; i < len; i++) {
        if (copy[i] != ';') {
            continue;
        }
        char after = copy[i + 1];
        copy[i + 1] = '\0';
        int done = sqlite3_complete(copy);
        copy[i + 1] = after;
        if (done) {
            free(copy);
            return i + 1;
        }
    }
    free(copy);
    return len;
}

/* Whether a statement holds nothing but blanks, comments and ';'. */
static int isEmptyStatement(const char *p)
{
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' ||
               *p == ';') {
            p++;
        }
        if (p[0] == '-' && p[1] == '-') {
            p += strcspn(p, "\n");
        } else if (p[0] == '/' && p[1] == '*') {
            const char *end = strstr(p + 2, "*/");
            p = end != NULL ? end + 2 : p + strlen(p);
        } else {
            return *p == '\0';
        }
    }
}

static double cpuSeconds(int sys)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    struct timeval *t = sys ? &ru.ru_stime : &ru.ru_utime;
    return (double)t->tv_sec + (double)t->tv_usec / 1e6;
}

static double wallSeconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int runStatement(struct shell *sh, const char *sql)
{
    char err[SHELL_ERR_MAX] = "";
    struct tpdb_result *res = NULL;
    /* shellInterrupted is not cleared here: a Ctrl-C pressed after Enter
     * but before the statement started still cancels it. */
    double w0 = wallSeconds(), u0 = cpuSeconds(0), s0 = cpuSeconds(1);
    int rc = sh->remote != NULL
                 ? remoteExec(sh->remote, sql, sh->leader_reads, &res, err,
                              sizeof err)
                 : localExec(sh->local, sql, &res, err, sizeof err);
    if (rc == 0) {
        tpdbRender(sh->out, sh->mode, sh->headers, res);
        fflush(sh->out);
    } else {
        shellError("%s", err);
    }
    tpdbResultFree(res);
    if (sh->timer) {
        fprintf(sh->out, "Run Time: real %.3f user %.6f sys %.6f\n",
                wallSeconds() - w0, cpuSeconds(0) - u0, cpuSeconds(1) - s0);
    }
    return rc;
}

int shellRunSql(struct shell *sh, const char *sql)
{
    char *copy = strdup(sql);
    char *p = copy;
    int rc = copy != NULL ? 0 : -1;
    while (rc == 0 && p != NULL && *p != '\0') {
        size_t n = statementLength(p);
        char keep = p[n];
        p[n] = '\0';
        if (!isEmptyStatement(p)) {
            rc = runStatement(sh, p);
        }
        p[n] = keep;
        p += n;
    }
    free(copy);
    return rc;
}

static int append(struct pending *pd, const char *line)
{
    size_t n = strlen(line);
    if (pd->len + n + 2 > pd->cap) {
        size_t cap = (pd->len + n + 2) * 2;
        char *b = realloc(pd->buf, cap);
        if (b == NULL) {
            return -1;
        }
        pd->buf = b;
        pd->cap = cap;
    }
    memcpy(pd->buf + pd->len, line, n);
    pd->len += n;
    pd->buf[pd->len++] = '\n';
    pd->buf[pd->len] = '\0';
    return 0;
}

/* Whether the shell stops now after a failure. */
static int stops(const struct shell *sh)
{
    return sh->batch || sh->bail;
}

/* Feeds one input line (without its newline). Returns 0, or -1 after an
 * error that stops the shell. */
static int feedLine(struct shell *sh, struct pending *pd, const char *line)
{
    int rc = 0;
    if (pd->len == 0) {
        const char *p = line + strspn(line, " \t");
        if (*p == '\0') {
            return 0;
        }
        if (*p == '.') {
            rc = shellDot(sh, p);
            return rc != 0 && stops(sh) ? -1 : 0;
        }
    }
    if (append(pd, line) != 0) {
        shellError("out of memory");
        return -1;
    }
    if (sqlite3_complete(pd->buf)) {
        rc = shellRunSql(sh, pd->buf);
        pd->len = 0;
        pd->buf[0] = '\0';
    }
    return rc != 0 && stops(sh) ? -1 : 0;
}

/* Runs what is left at end of input (a statement without ';'). */
static int flushPending(struct shell *sh, struct pending *pd)
{
    int rc = 0;
    if (pd->len > 0 && !isEmptyStatement(pd->buf)) {
        rc = shellRunSql(sh, pd->buf);
    }
    pd->len = 0;
    return rc != 0 && stops(sh) ? -1 : 0;
}

int shellRunFile(struct shell *sh, FILE *f)
{
    struct pending pd = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && !sh->exit_requested &&
           (n = getline(&line, &cap, f)) >= 0) {
        if (n > 0 && line[n - 1] == '\n') {
            line[--n] = '\0';
        }
        rc = feedLine(sh, &pd, line);
    }
    if (rc == 0 && !sh->exit_requested) {
        rc = flushPending(sh, &pd);
    }
    free(line);
    free(pd.buf);
    return rc;
}

/* The shell an EditLine serves (for the prompt callback). */
struct editor {
    struct shell *sh;
    struct pending *pd;
};

static char *prompt(EditLine *el)
{
    struct editor *ed = NULL;
    el_get(el, EL_CLIENTDATA, &ed);
    if (ed->pd->len > 0) {
        return "   ...> ";
    }
    int txn = ed->sh->remote != NULL ? remoteInTxn(ed->sh->remote)
                                     : localInTxn(ed->sh->local);
    return txn ? "tpdb*> " : "tpdb> ";
}

static void historyPath(char *path, size_t size)
{
    const char *home = getenv("HOME");
    snprintf(path, size, "%s/.tpdb_history", home != NULL ? home : ".");
}

/* One line from the terminal. Returns it (valid until the next call), or
 * NULL at Ctrl-D; *cancelled is set if Ctrl-C dropped what was typed. */
static const char *readTerminal(EditLine *el, int *cancelled)
{
    int n = 0;
    *cancelled = 0;
    shellInterrupted = 0;
    errno = 0;
    const char *line = el_gets(el, &n);
    /* End of input is NULL with n 0; a signal NULL with n -1, EINTR. */
    if (line == NULL && (shellInterrupted || (n < 0 && errno == EINTR))) {
        *cancelled = 1;
        el_reset(el);
    }
    return line;
}

/* Returns 0 at Ctrl-D or .quit, -1 after an error with .bail on. */
static int runInteractive(struct shell *sh)
{
    struct pending pd = {0};
    struct editor ed = {sh, &pd};
    char path[4096], *copy;
    int rc = 0;
    HistEvent ev;
    History *hist = history_init();
    EditLine *el = el_init("tpdb", stdin, stdout, stderr);
    historyPath(path, sizeof path);
    history(hist, &ev, H_SETSIZE, 2000);
    history(hist, &ev, H_SETUNIQUE, 1);
    history(hist, &ev, H_LOAD, path);
    el_set(el, EL_EDITOR, "emacs");
    el_set(el, EL_HIST, history, hist);
    el_set(el, EL_CLIENTDATA, &ed);
    el_set(el, EL_PROMPT, prompt);
    el_source(el, NULL);
    while (!sh->exit_requested) {
        int cancelled;
        const char *line = readTerminal(el, &cancelled);
        if (cancelled) {
            fputs("^C\n", stdout);
            pd.len = 0;
            continue;
        }
        if (line == NULL) {
            fputc('\n', stdout);
            break;
        }
        if ((copy = strdup(line)) == NULL) {
            break;
        }
        copy[strcspn(copy, "\n")] = '\0';
        if (copy[strspn(copy, " \t")] != '\0') {
            history(hist, &ev, H_ENTER, copy);
            history(hist, &ev, H_SAVE, path);
        }
        rc = feedLine(sh, &pd, copy);
        free(copy);
        if (rc != 0) {
            break;
        }
    }
    free(pd.buf);
    el_end(el);
    history_end(hist);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: tpdb [OPTIONS] [HOST:PORT | FILE]\n"
            "       tpdb import|export|recover|help ...\n"
            "\n"
            "Opens a shell on a tpdbd node (default %s) or on a local\n"
            "database FILE (a path or a file: URI) through the tpdb VFS.\n"
            "SQL is read from the terminal, or from standard input when it\n"
            "is not one; then the first error ends the shell with status "
            "1.\n"
            "\n"
            "options:\n"
            "  -c SQL        run SQL (statements or one dot command), exit\n"
            "  -cmd COMMAND  run COMMAND first (repeatable)\n"
            "  -bail         stop at the first error, also at a terminal\n"
            "  -header, -noheader, -list, -column, -box, -table, -csv,\n"
            "  -json, -line  as .headers and .mode\n"
            "  -db NAME.db   tpdbd: a database of the node other than "
            "data.db\n"
            "  -local        reads use local_query (default: query, on "
            "the leader)\n"
            "  -token TOKEN  tpdbd: the client token sent with every "
            "request\n"
            "                (default $TPDB_TOKEN, which other users "
            "cannot see\n"
            "                in the process list)\n"
            "  -help         this text\n",
            DEFAULT_ADDR);
}

/* Whether target names a tpdbd node rather than a local file. */
static int isAddress(const char *target)
{
    char host[TPDB_CLIENT_ADDR_MAX];
    unsigned port;
    struct stat sb;
    return strncmp(target, "file:", 5) != 0 && strchr(target, '/') == NULL &&
           tpdbClientSplitAddr(target, host, sizeof host, &port) == 0 &&
           stat(target, &sb) != 0;
}

struct options {
    const char *target;
    const char *sql;      /* -c */
    const char *cmds[32]; /* -cmd */
    int ncmds;
};

/* Returns 0, 1 for -help, or -1 for a usage error. */
static int parseOptions(struct shell *sh,
                        struct options *o,
                        int argc,
                        char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int m;
        if (a[0] != '-' || a[1] == '\0') {
            if (o->target != NULL) {
                fprintf(stderr, "tpdb: more than one database given\n");
                return -1;
            }
            o->target = a;
            continue;
        }
        a += a[1] == '-' ? 2 : 1;
        int takes = strcmp(a, "c") == 0 || strcmp(a, "cmd") == 0 ||
                    strcmp(a, "db") == 0 || strcmp(a, "token") == 0;
        if (takes && i + 1 >= argc) {
            fprintf(stderr, "tpdb: -%s needs an argument\n", a);
            return -1;
        }
        if (strcmp(a, "c") == 0) {
            o->sql = argv[++i];
        } else if (strcmp(a, "cmd") == 0 && o->ncmds < 32) {
            o->cmds[o->ncmds++] = argv[++i];
        } else if (strcmp(a, "db") == 0) {
            sh->db = argv[++i];
        } else if (strcmp(a, "token") == 0) {
            sh->token = argv[++i];
        } else if (strcmp(a, "bail") == 0) {
            sh->bail = 1;
        } else if (strcmp(a, "header") == 0 || strcmp(a, "noheader") == 0) {
            sh->headers = a[0] == 'h';
            sh->headers_set = 1;
        } else if (strcmp(a, "local") == 0) {
            sh->leader_reads = 0;
        } else if (strcmp(a, "batch") == 0) {
            sh->batch = 1;
        } else if (strcmp(a, "help") == 0 || strcmp(a, "h") == 0) {
            return 1;
        } else if ((m = tpdbModeByName(a)) >= 0) {
            sh->mode = m;
            if (m == TPDB_MODE_COLUMN && !sh->headers_set) {
                sh->headers = 1;
            }
        } else {
            fprintf(stderr, "tpdb: unknown option '%s' (try 'tpdb -help')\n",
                    argv[i]);
            return -1;
        }
    }
    return 0;
}

static int openBackend(struct shell *sh, const char *target)
{
    char err[SHELL_ERR_MAX] = "";
    if (target == NULL || isAddress(target)) {
        const char *token = sh->token;
        if (token == NULL || token[0] == '\0') {
            token = getenv("TPDB_TOKEN");
        }
        if (token != NULL && token[0] == '\0') {
            token = NULL;
        }
        sh->remote = remoteOpen(target != NULL ? target : DEFAULT_ADDR, sh->db,
                                token, &shellInterrupted, err, sizeof err);
    } else {
        sh->local = localOpen(target, err, sizeof err);
    }
    if (sh->remote == NULL && sh->local == NULL) {
        fprintf(stderr, "tpdb: %s\n", err);
        return -1;
    }
    return 0;
}

/* Runs the text of -c or -cmd: one dot command, or SQL. */
static int runText(struct shell *sh, const char *text)
{
    const char *p = text + strspn(text, " \t\n");
    return *p == '.' ? shellDot(sh, p) : shellRunSql(sh, text);
}

static int runBody(struct shell *sh, const struct options *o)
{
    for (int i = 0; i < o->ncmds; i++) {
        if (runText(sh, o->cmds[i]) != 0 && stops(sh)) {
            return 1;
        }
    }
    if (o->sql != NULL) {
        return runText(sh, o->sql) != 0 ? 1 : 0;
    }
    if (sh->interactive) {
        printf("tpdb shell, %s %s. Enter \".help\" for usage hints.\n",
               sh->remote != NULL ? "connected to tpdbd at" : "database",
               sh->remote != NULL ? remoteAddr(sh->remote) : o->target);
        return runInteractive(sh) != 0 ? 1 : 0;
    }
    return shellRunFile(sh, stdin) != 0 ? 1 : 0;
}

int tpdbShellMain(int argc, char **argv)
{
    struct shell sh = {.out = stdout, .leader_reads = 1};
    struct options o = {0};
    int rc = parseOptions(&sh, &o, argc, argv);
    if (rc != 0) {
        usage(rc > 0 ? stdout : stderr);
        return rc > 0 ? 0 : 2;
    }
    sh.interactive = o.sql == NULL && !sh.batch && isatty(0);
    sh.batch = !sh.interactive;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = onSigint;
    sigaction(SIGINT, &sa, NULL); /* no SA_RESTART: waits see EINTR */
    signal(SIGPIPE, SIG_IGN);
    if (openBackend(&sh, o.target) != 0) {
        return 1;
    }
    rc = runBody(&sh, &o);
    if (sh.out != stdout) {
        fclose(sh.out);
    }
    remoteClose(sh.remote);
    localClose(sh.local);
    return rc;
}
