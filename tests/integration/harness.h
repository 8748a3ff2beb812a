/*
 * Integration-test harness: temp dirs, free loopback ports, child processes
 * with piped stdin/stdout/stderr read line by line against a deadline, a
 * poll-until-true helper and a runner for the stock sqlite3 shell with the
 * tpdb extension loaded. Every spawned process is tracked; harnessCleanup()
 * (registered with atexit, and usable as a cmocka teardown) kills them all.
 * Test code only: single-threaded, errors as TPDB_* codes with errmsg.
 */
#ifndef TPDB_HARNESS_H
#define TPDB_HARNESS_H

#include <stddef.h>
#include <sys/types.h>

/* Stream selectors for the line readers. */
enum { HARNESS_STDOUT = 1, HARNESS_STDERR = 2 };

/* Largest path the harness builds (temp dirs, extension path). */
#define HARNESS_PATH_MAX 4096

/* A child process started by harnessSpawn(). Opaque; owned by the harness
 * registry until harnessProcFree() or harnessCleanup(). */
struct harness_proc;

/* Creates a fresh, empty directory "<TMPDIR or /tmp>/tpdb-it-XXXXXX" and
 * writes its path into path (size bytes). Returns TPDB_OK, TPDB_TOOBIG if the
 * path does not fit, or TPDB_IOERR (errmsg says why). The caller removes it
 * with harnessRmTree(). */
int harnessTmpDir(char *path, size_t size, char *errmsg);

/* Removes path and everything below it, without following symlinks. A
 * missing path is not an error. Returns TPDB_OK or TPDB_IOERR. */
int harnessRmTree(const char *path, char *errmsg);

/* Picks n (1-64) distinct free TCP ports on 127.0.0.1 by binding port 0 and
 * reading back what the kernel chose; the sockets are closed before return,
 * so another process may take a port before the caller binds it (rare).
 * Returns TPDB_OK, TPDB_INVALID for a bad n, or TPDB_IOERR. */
int harnessFreePorts(unsigned *ports, unsigned n, char *errmsg);

/* Starts argv[0] (looked up in PATH if it has no slash) with argv, in its own
 * process group, with stdin, stdout and stderr on pipes. env is NULL or a
 * NULL-terminated list of "NAME=value" strings added to (or replacing in) the
 * inherited environment; cwd is NULL (inherit) or the working directory. The
 * child starts with SIGPIPE at its default action and gets SIGKILL if the
 * spawning thread dies. The first spawn makes the test process ignore
 * SIGPIPE (a dead child's stdin then gives EPIPE) and registers
 * harnessCleanup() with atexit. Fails with TPDB_IOERR, with
 * the exec error in errmsg, if the program cannot be started. On TPDB_OK
 * *proc is valid until harnessProcFree() or harnessCleanup(). */
int harnessSpawn(const char *const *argv,
                 const char *const *env,
                 const char *cwd,
                 struct harness_proc **proc,
                 char *errmsg);

/* The child's pid (also its process group id). */
pid_t harnessProcPid(const struct harness_proc *proc);

/* Writes line plus '\n' to the child's stdin, waiting at most timeout_ms for
 * pipe space. Returns TPDB_OK, TPDB_TIMEOUT, TPDB_SHUTDOWN if stdin is
 * closed or the child stopped reading it, or TPDB_IOERR. */
int harnessProcWriteLine(struct harness_proc *proc,
                         const char *line,
                         int timeout_ms,
                         char *errmsg);

/* Closes the child's stdin so that it sees end of file. Idempotent. */
void harnessProcCloseStdin(struct harness_proc *proc);

/* Returns the next complete line (without its '\n') of the chosen stream in
 * *line, allocated with tpdb_malloc and owned by the caller (tpdb_free). A
 * last line without '\n' is returned at end of file. Both streams are
 * drained while waiting, so a chatty stderr never blocks the child. Returns
 * TPDB_OK, TPDB_TIMEOUT after timeout_ms, TPDB_SHUTDOWN at end of file with
 * nothing left, TPDB_NOMEM or TPDB_IOERR. */
int harnessProcReadLine(struct harness_proc *proc,
                        int stream,
                        int timeout_ms,
                        char **line,
                        char *errmsg);

/* Reads lines of the chosen stream until match(line, arg) returns non-zero,
 * discarding the lines before it; timeout_ms bounds the whole wait. On TPDB_OK
 * the matching line is returned in *line (caller frees) if line is not NULL.
 * Other returns as harnessProcReadLine(). */
int harnessProcExpect(struct harness_proc *proc,
                      int stream,
                      int (*match)(const char *line, void *arg),
                      void *arg,
                      int timeout_ms,
                      char **line,
                      char *errmsg);

/* A match function for harnessProcExpect(): line contains the string arg. */
int harnessMatchContains(const char *line, void *arg);

/* Reads the chosen stream until end of file, at most timeout_ms, and returns
 * everything not yet consumed (NUL-terminated, caller frees with tpdb_free)
 * in *out. Returns TPDB_OK, TPDB_TIMEOUT, TPDB_NOMEM or TPDB_IOERR. */
int harnessProcReadAll(struct harness_proc *proc,
                       int stream,
                       int timeout_ms,
                       char **out,
                       char *errmsg);

/* Sends sig to the child's process group unless the child has already been
 * reaped. Returns TPDB_OK, TPDB_SHUTDOWN if it was reaped, or TPDB_IOERR. */
int harnessProcSignal(struct harness_proc *proc, int sig, char *errmsg);

/* Waits at most timeout_ms for the child to exit and reaps it. *status (if
 * not NULL) gets the waitpid status. Returns TPDB_OK (also if reaped before)
 * or TPDB_TIMEOUT, or TPDB_IOERR. */
int harnessProcWait(struct harness_proc *proc,
                    int timeout_ms,
                    int *status,
                    char *errmsg);

/* SIGKILL then wait (a killed process exits within 10 s or this fails with
 * TPDB_TIMEOUT). */
int harnessProcKill(struct harness_proc *proc, int *status, char *errmsg);

/* SIGTERM, wait up to timeout_ms, then SIGKILL and wait. Returns TPDB_OK if
 * the child exited on SIGTERM, TPDB_TIMEOUT if it needed SIGKILL (it is
 * reaped either way), or TPDB_IOERR. */
int harnessProcStop(struct harness_proc *proc,
                    int timeout_ms,
                    int *status,
                    char *errmsg);

/* Kills the child if it was not reaped, closes its pipes, removes it from the
 * registry and frees it. proc is invalid afterwards. NULL is a no-op. */
void harnessProcFree(struct harness_proc *proc);

/* Kills (SIGKILL to each process group), reaps and frees every process still
 * in the registry. Runs at exit; tests call it (or harnessTeardown) after
 * each test. Every harness_proc pointer is invalid afterwards. */
void harnessCleanup(void);

/* harnessCleanup() with the signature of a cmocka setup/teardown function;
 * always returns 0. */
int harnessTeardown(void **state);

/* How much slower than a plain build this test build runs its nodes: 4
 * under ThreadSanitizer (whose nodes run 5-15x slower, so that a 400 ms
 * election timeout lets a loaded 2-core machine hold elections in the
 * middle of a transaction), else 1. */
unsigned harnessTimerScale(void);

/* Copies the URI parameters `in` to out (size bytes), with the values of
 * election_ms and heartbeat_ms multiplied by harnessTimerScale(). Asserts
 * that out is large enough. */
void harnessScaleParams(const char *in, char *out, size_t size);

/* Calls cond(arg) every interval_ms (at least 1) until it returns non-zero
 * or timeout_ms have passed. Returns TPDB_OK as soon as cond holds (cond is
 * always tried at least once and once more at the deadline), else
 * TPDB_TIMEOUT. */
int harnessPollUntil(int (*cond)(void *arg),
                     void *arg,
                     int timeout_ms,
                     int interval_ms);

/* Writes the path of the built extension, "$TPDB_BUILD_ROOT/ext/libtpdbraft"
 * (no suffix, as `.load` takes it), into path. Returns TPDB_OK, TPDB_NOTFOUND
 * if TPDB_BUILD_ROOT is not set, or TPDB_TOOBIG. */
int harnessExtPath(char *path, size_t size, char *errmsg);

/* Runs the stock sqlite3 shell ($TPDB_SQLITE3, default /usr/bin/sqlite3) as
 * `sqlite3 -batch -bail [-cmd '.load ext'] -cmd ".open 'uri'" :memory: sql`
 * (the extension must be loaded before a URI naming its VFS is opened) and
 * returns its stdout in *out (caller frees with tpdb_free). ext NULL means no
 * extension. Fails with TPDB_IOERR, stderr's first error line in errmsg, if
 * the shell exits non-zero or reports an error (a failed .open only prints
 * one); TPDB_TIMEOUT (the shell is killed) after timeout_ms; TPDB_INVALID if
 * uri contains a quote. *out is set only on TPDB_OK. */
int harnessSqlite3(const char *ext,
                   const char *uri,
                   const char *sql,
                   int timeout_ms,
                   char **out,
                   char *errmsg);

#endif /* TPDB_HARNESS_H */
