/*
 * tmux-driven terminals for the tests (tty.h). Every tmux command is a
 * separate process run through the harness with a deadline.
 */
#include "tests/integration/tty.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "base/base.h"

#define TMUX_MS 10000
#define ARGV_MAX 64

/* Runs tmux -S sock args...; returns its stdout (caller frees) and
 * asserts it exited 0 unless may_fail. */
static char *tmux(struct tty *t, int may_fail, const char *const *args)
{
    const char *argv[ARGV_MAX];
    char errmsg[TPDB_ERRMSG_SIZE];
    struct harness_proc *p;
    char *out = NULL;
    int n = 0, status = 0;
    const char *name = args[0];
    argv[n++] = "tmux";
    argv[n++] = "-S";
    argv[n++] = t->sock;
    for (; *args != NULL && n < ARGV_MAX - 1; args++) {
        argv[n++] = *args;
    }
    argv[n] = NULL;
    if (harnessSpawn(argv, NULL, NULL, &p, errmsg) != TPDB_OK) {
        fail_msg("cannot run tmux (is it installed?): %s", errmsg);
    }
    harnessProcCloseStdin(p);
    assert_int_equal(
        harnessProcReadAll(p, HARNESS_STDOUT, TMUX_MS, &out, errmsg), TPDB_OK);
    assert_int_equal(harnessProcWait(p, TMUX_MS, &status, errmsg), TPDB_OK);
    harnessProcFree(p);
    if (!may_fail && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        fail_msg("tmux %s failed (status %d)", name, status);
    }
    return out;
}

static void tmuxRun(struct tty *t, const char *const *args)
{
    tpdb_free(tmux(t, 0, args));
}

void ttyStart(struct tty *t,
              const char *dir,
              const char *const *argv,
              const char *const *env)
{
    const char *args[ARGV_MAX];
    int n = 0;
    /* A new socket each time: a server just told to exit may still hold
     * the last one. */
    static unsigned serial;
    snprintf(t->sock, sizeof t->sock, "%s/tmux%u.sock", dir, ++serial);
    args[n++] = "-f";
    args[n++] = "/dev/null";
    args[n++] = "new-session";
    args[n++] = "-d";
    args[n++] = "-x";
    args[n++] = "160";
    args[n++] = "-y";
    args[n++] = "50";
    for (; env != NULL && *env != NULL && n < ARGV_MAX - 24; env++) {
        args[n++] = "-e";
        args[n++] = *env;
    }
    for (; *argv != NULL && n < ARGV_MAX - 8; argv++) {
        args[n++] = *argv;
    }
    args[n++] = ";";
    args[n++] = "set-option";
    args[n++] = "-g";
    args[n++] = "remain-on-exit";
    args[n++] = "on";
    args[n++] = ";";
    args[n++] = "set-option";
    args[n++] = "-g";
    args[n++] = "history-limit";
    args[n++] = "5000";
    args[n] = NULL;
    tmuxRun(t, args);
}

void ttyKey(struct tty *t, const char *key)
{
    const char *args[] = {"send-keys", "-t", "0", key, NULL};
    tmuxRun(t, args);
}

void ttyType(struct tty *t, const char *text)
{
    size_t len = strlen(text);
    char *copy = tpdb_malloc(len + 1);
    assert_non_null(copy);
    memcpy(copy, text, len + 1);
    /* tmux reads an argument ending in ';' as a command separator, so a
     * final ';' goes as a hex key. */
    int semi = len > 0 && copy[len - 1] == ';';
    if (semi) {
        copy[len - 1] = '\0';
    }
    if (copy[0] != '\0') {
        const char *args[] = {"send-keys", "-t", "0", "-l", copy, NULL};
        tmuxRun(t, args);
    }
    if (semi) {
        const char *args[] = {"send-keys", "-t", "0", "-H", "3b", NULL};
        tmuxRun(t, args);
    }
    tpdb_free(copy);
    ttyKey(t, "Enter");
}

char *ttyScreen(struct tty *t)
{
    const char *args[] = {"capture-pane", "-p",    "-J", "-t", "0",
                          "-S",           "-5000", NULL};
    return tmux(t, 0, args);
}

int ttyCount(struct tty *t, const char *needle)
{
    char *s = ttyScreen(t);
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL;
         p += strlen(needle)) {
        n++;
    }
    tpdb_free(s);
    return n;
}

struct waitArg {
    struct tty *t;
    const char *needle;
    int n;
};

static int enough(void *arg)
{
    struct waitArg *w = arg;
    return ttyCount(w->t, w->needle) >= w->n;
}

void ttyWaitCount(struct tty *t, const char *needle, int n, int timeout_ms)
{
    struct waitArg w = {t, needle, n};
    if (harnessPollUntil(enough, &w, timeout_ms, 50) != TPDB_OK) {
        char *s = ttyScreen(t);
        fail_msg("screen has not shown \"%s\" %d times within %d ms:\n%s",
                 needle, n, timeout_ms, s);
    }
}

int ttyCursorX(struct tty *t)
{
    const char *args[] = {"display-message", "-p", "-t", "0",
                          "#{cursor_x}",     NULL};
    char *out = tmux(t, 0, args);
    int x = atoi(out);
    tpdb_free(out);
    return x;
}

int ttyExited(struct tty *t)
{
    const char *args[] = {"list-panes", "-t", "0", "-F", "#{pane_dead}", NULL};
    char *out = tmux(t, 1, args);
    int dead = out != NULL && out[0] == '1';
    tpdb_free(out);
    return dead;
}

void ttyClose(struct tty *t)
{
    if (t->sock[0] != '\0') {
        const char *args[] = {"kill-server", NULL};
        tpdb_free(tmux(t, 1, args));
        t->sock[0] = '\0';
    }
}
