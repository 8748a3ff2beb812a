/*
 * A terminal for the tests that type at a program as a person does: the
 * program runs in a detached tmux session on a private server socket,
 * keys are sent with send-keys and the screen is read with capture-pane.
 * Test code only, single-threaded; failures are cmocka assertion
 * failures. Needs tmux (test.sh installs it).
 */
#ifndef TPDB_TTY_H
#define TPDB_TTY_H

#include <stddef.h>

#include "tests/integration/harness.h"

struct tty {
    char sock[HARNESS_PATH_MAX]; /* tmux server socket */
};

/* Starts argv (NULL-terminated) in a new 160x50 terminal whose
 * environment adds env ("NAME=value" strings, NULL-terminated, may be
 * NULL). The pane stays after the program exits (ttyExited()). sock is
 * made under dir. */
void ttyStart(struct tty *t,
              const char *dir,
              const char *const *argv,
              const char *const *env);

/* Types text literally, then Enter. */
void ttyType(struct tty *t, const char *text);

/* Sends one tmux key name ("Up", "C-c", "C-d", "Enter"). */
void ttyKey(struct tty *t, const char *key);

/* The whole screen and scroll-back as text (caller frees with tpdb_free). */
char *ttyScreen(struct tty *t);

/* How often needle occurs on the screen. */
int ttyCount(struct tty *t, const char *needle);

/* Polls the screen (every 50 ms, at most timeout_ms) until needle occurs
 * at least n times; fails the test with the screen printed if not. */
void ttyWaitCount(struct tty *t, const char *needle, int n, int timeout_ms);

/* The cursor's column (0 at the start of a line). */
int ttyCursorX(struct tty *t);

/* Whether the program in the terminal has exited. */
int ttyExited(struct tty *t);

/* Kills the tmux server and its program. Idempotent. */
void ttyClose(struct tty *t);

#endif /* TPDB_TTY_H */
