/*
 * Integration-test harness (see harness.h): children run in their own process
 * group with pipes on stdin/stdout/stderr. The parent side of every pipe is
 * non-blocking; whenever the harness waits (for a line, for pipe space, for
 * an exit) it drains both output pipes into per-stream line buffers, so a
 * child never blocks on a full pipe while the test waits on it. A registry
 * of live children is the one piece of global state, needed by atexit.
 */
#include "tests/integration/harness.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"

/* Most bytes read from one pipe per fill, so a child that writes without end
 * cannot starve the caller's deadline checks. */
#define HARNESS_FILL_MAX (64 * 1024)
/* How long a SIGKILLed child may take to be reaped. */
#define HARNESS_KILL_WAIT_MS 10000
/* Longest sleep between waitpid() polls. */
#define HARNESS_WAIT_TICK_MS 5

extern char **environ;

/* Output received from one of a child's streams and not yet consumed. base is
 * NUL-terminated when non-NULL. fd is -1 once end of file was seen. */
struct harness_buf {
    char *base;
    size_t len;
    size_t cap;
    int fd;
    int eof;
};

struct harness_proc {
    pid_t pid;
    int reaped;
    int status;
    int in_fd;
    struct harness_buf out;
    struct harness_buf err;
    struct harness_proc *next;
};

static struct harness_proc *registry;
static int registry_hooked;

static uint64_t deadlineAfter(int timeout_ms)
{
    return tpdbNowMs() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
}

static int msLeft(uint64_t deadline)
{
    uint64_t now = tpdbNowMs();
    uint64_t left = now >= deadline ? 0 : deadline - now;
    return left > 1000000 ? 1000000 : (int)left;
}

static void sleepMs(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- Temp dirs and ports ---------------------------------------------- */

int harnessTmpDir(char *path, size_t size, char *errmsg)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0') {
        base = "/tmp";
    }
    int n = snprintf(path, size, "%s/tpdb-it-XXXXXX", base);
    if (n < 0 || (size_t)n >= size) {
        tpdbErrf(errmsg, "temp dir path too long under %s", base);
        return TPDB_TOOBIG;
    }
    if (mkdtemp(path) == NULL) {
        tpdbErrf(errmsg, "mkdtemp %s: %s", path, strerror(errno));
        return TPDB_IOERR;
    }
    return TPDB_OK;
}

static int rmEntry(const char *fpath,
                   const struct stat *sb,
                   int typeflag,
                   struct FTW *ftwbuf)
{
    (void)sb;
    (void)typeflag;
    (void)ftwbuf;
    if (remove(fpath) != 0 && errno != ENOENT) {
        return errno;
    }
    return 0;
}

int harnessRmTree(const char *path, char *errmsg)
{
    struct stat st;
    if (lstat(path, &st) != 0 && errno == ENOENT) {
        return TPDB_OK;
    }
    int rv = nftw(path, rmEntry, 16, FTW_DEPTH | FTW_PHYS);
    if (rv != 0) {
        tpdbErrf(errmsg, "remove %s: %s", path, strerror(rv > 0 ? rv : errno));
        return TPDB_IOERR;
    }
    return TPDB_OK;
}

/* Binds a new socket to 127.0.0.1:0; the caller closes *fd. */
static int bindAnyPort(int *fd, unsigned *port, char *errmsg)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*fd < 0) {
        tpdbErrf(errmsg, "socket: %s", strerror(errno));
        return TPDB_IOERR;
    }
    if (bind(*fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        getsockname(*fd, (struct sockaddr *)&addr, &len) != 0) {
        tpdbErrf(errmsg, "bind 127.0.0.1:0: %s", strerror(errno));
        close(*fd);
        return TPDB_IOERR;
    }
    *port = ntohs(addr.sin_port);
    return TPDB_OK;
}

int harnessFreePorts(unsigned *ports, unsigned n, char *errmsg)
{
    int fds[64];
    unsigned opened = 0;
    int rv = TPDB_OK;
    if (n == 0 || n > 64) {
        tpdbErrf(errmsg, "can pick 1 to 64 ports, not %u", n);
        return TPDB_INVALID;
    }
    /* All sockets stay bound until every port is chosen, so the ports are
     * distinct. */
    while (opened < n) {
        rv = bindAnyPort(&fds[opened], &ports[opened], errmsg);
        if (rv != TPDB_OK) {
            break;
        }
        opened++;
    }
    for (unsigned i = 0; i < opened; i++) {
        close(fds[i]);
    }
    return rv;
}

/* ---- Spawning ----------------------------------------------------------- */

static size_t envNameLen(const char *entry)
{
    const char *eq = strchr(entry, '=');
    return eq != NULL ? (size_t)(eq - entry) : strlen(entry);
}

static int envOverridden(const char *entry, const char *const *env)
{
    size_t n = envNameLen(entry);
    for (size_t i = 0; env != NULL && env[i] != NULL; i++) {
        if (envNameLen(env[i]) == n && strncmp(entry, env[i], n) == 0) {
            return 1;
        }
    }
    return 0;
}

/* The child's environment: environ minus the names in env, plus env. The
 * array is owned by the caller; its strings belong to environ and env. */
static char **envBuild(const char *const *env)
{
    size_t count = 0;
    size_t extra = 0;
    while (environ != NULL && environ[count] != NULL) {
        count++;
    }
    while (env != NULL && env[extra] != NULL) {
        extra++;
    }
    char **envp = tpdb_calloc(count + extra + 1, sizeof *envp);
    if (envp == NULL) {
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < count; i++) {
        if (!envOverridden(environ[i], env)) {
            envp[k++] = environ[i];
        }
    }
    for (size_t i = 0; i < extra; i++) {
        envp[k++] = (char *)env[i];
    }
    return envp;
}

/* Pipes: [0] stdin, [1] stdout, [2] stderr, [3] exec status. */
enum { PIPE_IN, PIPE_OUT, PIPE_ERR, PIPE_EXEC, PIPE_N };

static void pipesClose(int p[PIPE_N][2])
{
    for (int i = 0; i < PIPE_N; i++) {
        for (int j = 0; j < 2; j++) {
            if (p[i][j] >= 0) {
                close(p[i][j]);
                p[i][j] = -1;
            }
        }
    }
}

static int moveFd(int fd, int target)
{
    if (fd == target) {
        return fcntl(fd, F_SETFD, 0);
    }
    return dup2(fd, target) < 0 ? -1 : 0;
}

/* Runs in the forked child; only async-signal-safe calls. Never returns. */
static void childExec(int p[PIPE_N][2],
                      const char *const *argv,
                      char **envp,
                      const char *cwd,
                      pid_t parent)
{
    struct sigaction sa;
    int e;
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
        _exit(127);
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &sa, NULL);
    if (moveFd(p[PIPE_IN][0], 0) != 0 || moveFd(p[PIPE_OUT][1], 1) != 0 ||
        moveFd(p[PIPE_ERR][1], 2) != 0) {
        goto err;
    }
    if (cwd != NULL && chdir(cwd) != 0) {
        goto err;
    }
    execvpe(argv[0], (char *const *)argv, envp);
err:
    e = errno;
    if (write(p[PIPE_EXEC][1], &e, sizeof e) < 0) {
        _exit(127);
    }
    _exit(127);
}

static int setNonBlocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/* Reads the exec status pipe: 0 once exec succeeded, else the child's errno
 * (the child is then reaped). */
static int execResult(pid_t pid, int fd)
{
    int e = 0;
    ssize_t n;
    do {
        n = read(fd, &e, sizeof e);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof e) {
        return 0;
    }
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    return e != 0 ? e : EINVAL;
}

static void registryAdd(struct harness_proc *proc)
{
    if (!registry_hooked) {
        /* Writes to a dead child must fail with EPIPE, not kill the test. */
        signal(SIGPIPE, SIG_IGN);
        atexit(harnessCleanup);
        registry_hooked = 1;
    }
    proc->next = registry;
    registry = proc;
}

static int forkChild(int p[PIPE_N][2],
                     const char *const *argv,
                     char **envp,
                     const char *cwd,
                     pid_t *pid,
                     char *errmsg)
{
    pid_t parent = getpid();
    fflush(NULL);
    *pid = fork();
    if (*pid < 0) {
        tpdbErrf(errmsg, "fork: %s", strerror(errno));
        return TPDB_IOERR;
    }
    if (*pid == 0) {
        childExec(p, argv, envp, cwd, parent);
    }
    close(p[PIPE_EXEC][1]);
    p[PIPE_EXEC][1] = -1;
    int e = execResult(*pid, p[PIPE_EXEC][0]);
    if (e != 0) {
        tpdbErrf(errmsg, "exec %s%s%s: %s", argv[0], cwd ? " in " : "",
                 cwd ? cwd : "", strerror(e));
        return TPDB_IOERR;
    }
    return TPDB_OK;
}

static int pipesOpen(int p[PIPE_N][2], char *errmsg)
{
    for (int i = 0; i < PIPE_N; i++) {
        if (pipe2(p[i], O_CLOEXEC) != 0) {
            tpdbErrf(errmsg, "pipe: %s", strerror(errno));
            return TPDB_IOERR;
        }
    }
    if (setNonBlocking(p[PIPE_IN][1]) != 0 ||
        setNonBlocking(p[PIPE_OUT][0]) != 0 ||
        setNonBlocking(p[PIPE_ERR][0]) != 0) {
        tpdbErrf(errmsg, "fcntl O_NONBLOCK: %s", strerror(errno));
        return TPDB_IOERR;
    }
    return TPDB_OK;
}

int harnessSpawn(const char *const *argv,
                 const char *const *env,
                 const char *cwd,
                 struct harness_proc **proc,
                 char *errmsg)
{
    int p[PIPE_N][2] = {{-1, -1}, {-1, -1}, {-1, -1}, {-1, -1}};
    struct harness_proc *child;
    char **envp;
    int rv = TPDB_NOMEM;
    if (argv == NULL || argv[0] == NULL) {
        tpdbErrf(errmsg, "spawn: empty argv");
        return TPDB_INVALID;
    }
    child = tpdb_calloc(1, sizeof *child);
    if (child == NULL) {
        goto err;
    }
    envp = envBuild(env);
    if (envp == NULL) {
        goto err_after_child;
    }
    rv = pipesOpen(p, errmsg);
    if (rv == TPDB_OK) {
        rv = forkChild(p, argv, envp, cwd, &child->pid, errmsg);
    }
    tpdb_free(envp);
    if (rv != TPDB_OK) {
        goto err_after_child;
    }
    child->in_fd = p[PIPE_IN][1];
    child->out.fd = p[PIPE_OUT][0];
    child->err.fd = p[PIPE_ERR][0];
    p[PIPE_IN][1] = p[PIPE_OUT][0] = p[PIPE_ERR][0] = -1;
    pipesClose(p);
    registryAdd(child);
    *proc = child;
    return TPDB_OK;

err_after_child:
    pipesClose(p);
    tpdb_free(child);
err:
    if (rv == TPDB_NOMEM) {
        tpdbErrf(errmsg, "spawn %s: out of memory", argv[0]);
    }
    return rv;
}

pid_t harnessProcPid(const struct harness_proc *proc)
{
    return proc->pid;
}

/* ---- Pipes ------------------------------------------------------------- */

static int bufAppend(struct harness_buf *b, const char *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        char *base = tpdb_realloc(b->base, cap);
        if (base == NULL) {
            return TPDB_NOMEM;
        }
        b->base = base;
        b->cap = cap;
    }
    memcpy(b->base + b->len, data, n);
    b->len += n;
    b->base[b->len] = '\0';
    return TPDB_OK;
}

static void bufClose(struct harness_buf *b)
{
    if (b->fd >= 0) {
        close(b->fd);
        b->fd = -1;
    }
    b->eof = 1;
}

/* Reads what b->fd has available, up to HARNESS_FILL_MAX bytes. */
static int bufFill(struct harness_buf *b, char *errmsg)
{
    char chunk[4096];
    size_t total = 0;
    while (b->fd >= 0 && total < HARNESS_FILL_MAX) {
        ssize_t n = read(b->fd, chunk, sizeof chunk);
        if (n > 0) {
            if (bufAppend(b, chunk, (size_t)n) != TPDB_OK) {
                tpdbErrf(errmsg, "buffer child output: out of memory");
                return TPDB_NOMEM;
            }
            total += (size_t)n;
        } else if (n == 0) {
            bufClose(b);
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else if (errno != EINTR) {
            tpdbErrf(errmsg, "read child output: %s", strerror(errno));
            return TPDB_IOERR;
        }
    }
    return TPDB_OK;
}

/* Waits up to timeout_ms for output (or, with want_write, stdin space) and
 * drains both output pipes. With nothing to wait on it just sleeps. */
static int procPoll(struct harness_proc *proc,
                    int want_write,
                    int timeout_ms,
                    char *errmsg)
{
    struct pollfd pfd[3];
    nfds_t n = 0;
    if (want_write && proc->in_fd >= 0) {
        pfd[n++] = (struct pollfd){.fd = proc->in_fd, .events = POLLOUT};
    }
    if (proc->out.fd >= 0) {
        pfd[n++] = (struct pollfd){.fd = proc->out.fd, .events = POLLIN};
    }
    if (proc->err.fd >= 0) {
        pfd[n++] = (struct pollfd){.fd = proc->err.fd, .events = POLLIN};
    }
    if (poll(n > 0 ? pfd : NULL, n, timeout_ms) < 0 && errno != EINTR) {
        tpdbErrf(errmsg, "poll: %s", strerror(errno));
        return TPDB_IOERR;
    }
    int rv = bufFill(&proc->out, errmsg);
    return rv != TPDB_OK ? rv : bufFill(&proc->err, errmsg);
}

static int writeAll(struct harness_proc *proc,
                    const char *data,
                    size_t len,
                    uint64_t deadline,
                    char *errmsg)
{
    while (len > 0) {
        if (proc->in_fd < 0) {
            tpdbErrf(errmsg, "pid %d: stdin is closed", (int)proc->pid);
            return TPDB_SHUTDOWN;
        }
        ssize_t n = write(proc->in_fd, data, len);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EPIPE) {
            tpdbErrf(errmsg, "pid %d stopped reading stdin", (int)proc->pid);
            return TPDB_SHUTDOWN;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            tpdbErrf(errmsg, "write to pid %d: %s", (int)proc->pid,
                     strerror(errno));
            return TPDB_IOERR;
        }
        if (msLeft(deadline) == 0) {
            tpdbErrf(errmsg, "write to pid %d: timed out", (int)proc->pid);
            return TPDB_TIMEOUT;
        }
        int rv = procPoll(proc, 1, msLeft(deadline), errmsg);
        if (rv != TPDB_OK) {
            return rv;
        }
    }
    return TPDB_OK;
}

int harnessProcWriteLine(struct harness_proc *proc,
                         const char *line,
                         int timeout_ms,
                         char *errmsg)
{
    uint64_t deadline = deadlineAfter(timeout_ms);
    int rv = writeAll(proc, line, strlen(line), deadline, errmsg);
    return rv != TPDB_OK ? rv : writeAll(proc, "\n", 1, deadline, errmsg);
}

void harnessProcCloseStdin(struct harness_proc *proc)
{
    if (proc->in_fd >= 0) {
        close(proc->in_fd);
        proc->in_fd = -1;
    }
}

static struct harness_buf *pickBuf(struct harness_proc *proc, int stream)
{
    return stream == HARNESS_STDERR ? &proc->err : &proc->out;
}

/* Moves the first line of b (or, at end of file, its unterminated rest) into
 * *line. Returns TPDB_OK, TPDB_NOTFOUND if no line is complete yet, or
 * TPDB_NOMEM. */
static int bufTakeLine(struct harness_buf *b, char **line)
{
    char *nl = b->len > 0 ? memchr(b->base, '\n', b->len) : NULL;
    size_t n;
    size_t skip;
    if (nl != NULL) {
        n = (size_t)(nl - b->base);
        skip = n + 1;
    } else if (b->eof && b->len > 0) {
        n = skip = b->len;
    } else {
        return TPDB_NOTFOUND;
    }
    *line = tpdb_malloc(n + 1);
    if (*line == NULL) {
        return TPDB_NOMEM;
    }
    memcpy(*line, b->base, n);
    (*line)[n] = '\0';
    memmove(b->base, b->base + skip, b->len - skip + 1);
    b->len -= skip;
    return TPDB_OK;
}

static int readLineUntil(struct harness_proc *proc,
                         int stream,
                         uint64_t deadline,
                         char **line,
                         char *errmsg)
{
    struct harness_buf *b = pickBuf(proc, stream);
    int polled = 0;
    for (;;) {
        int rv = bufTakeLine(b, line);
        if (rv == TPDB_NOMEM) {
            tpdbErrf(errmsg, "read line: out of memory");
        }
        if (rv != TPDB_NOTFOUND) {
            return rv;
        }
        if (b->eof) {
            tpdbErrf(errmsg, "pid %d: end of output", (int)proc->pid);
            return TPDB_SHUTDOWN;
        }
        if (polled && msLeft(deadline) == 0) {
            tpdbErrf(errmsg, "pid %d: timed out waiting for a line",
                     (int)proc->pid);
            return TPDB_TIMEOUT;
        }
        rv = procPoll(proc, 0, msLeft(deadline), errmsg);
        if (rv != TPDB_OK) {
            return rv;
        }
        polled = 1;
    }
}

int harnessProcReadLine(struct harness_proc *proc,
                        int stream,
                        int timeout_ms,
                        char **line,
                        char *errmsg)
{
    return readLineUntil(proc, stream, deadlineAfter(timeout_ms), line, errmsg);
}

/* How many of the lines harnessProcExpect() passed over it prints when the
 * wait fails: a process that dies says why in its last lines (a sanitizer
 * report ends with its SUMMARY line). */
enum { EXPECT_KEEP = 16 };

static void printKept(const struct harness_proc *proc,
                      char *const *kept,
                      unsigned next)
{
    for (unsigned k = 0; k < EXPECT_KEEP; k++) {
        const char *l = kept[(next + k) % EXPECT_KEEP];
        if (l != NULL) {
            fprintf(stderr, "pid %d> %s\n", (int)proc->pid, l);
        }
    }
}

int harnessProcExpect(struct harness_proc *proc,
                      int stream,
                      int (*match)(const char *line, void *arg),
                      void *arg,
                      int timeout_ms,
                      char **line,
                      char *errmsg)
{
    uint64_t deadline = deadlineAfter(timeout_ms);
    char *kept[EXPECT_KEEP] = {NULL};
    unsigned next = 0;
    int rv;
    for (;;) {
        char *got = NULL;
        rv = readLineUntil(proc, stream, deadline, &got, errmsg);
        if (rv != TPDB_OK) {
            printKept(proc, kept, next);
            break;
        }
        if (match(got, arg)) {
            if (line != NULL) {
                *line = got;
            } else {
                tpdb_free(got);
            }
            break;
        }
        tpdb_free(kept[next]);
        kept[next] = got;
        next = (next + 1) % EXPECT_KEEP;
    }
    for (unsigned k = 0; k < EXPECT_KEEP; k++) {
        tpdb_free(kept[k]);
    }
    return rv;
}

int harnessMatchContains(const char *line, void *arg)
{
    return strstr(line, (const char *)arg) != NULL;
}

int harnessProcReadAll(struct harness_proc *proc,
                       int stream,
                       int timeout_ms,
                       char **out,
                       char *errmsg)
{
    uint64_t deadline = deadlineAfter(timeout_ms);
    struct harness_buf *b = pickBuf(proc, stream);
    int polled = 0;
    while (!b->eof) {
        if (polled && msLeft(deadline) == 0) {
            tpdbErrf(errmsg, "pid %d: timed out waiting for end of output",
                     (int)proc->pid);
            return TPDB_TIMEOUT;
        }
        int rv = procPoll(proc, 0, msLeft(deadline), errmsg);
        if (rv != TPDB_OK) {
            return rv;
        }
        polled = 1;
    }
    if (b->base == NULL && bufAppend(b, "", 0) != TPDB_OK) {
        tpdbErrf(errmsg, "read output: out of memory");
        return TPDB_NOMEM;
    }
    *out = b->base;
    b->base = NULL;
    b->len = b->cap = 0;
    return TPDB_OK;
}

/* ---- Signals and exit ---------------------------------------------------- */

int harnessProcSignal(struct harness_proc *proc, int sig, char *errmsg)
{
    if (proc->reaped) {
        tpdbErrf(errmsg, "pid %d already exited", (int)proc->pid);
        return TPDB_SHUTDOWN;
    }
    if (kill(-proc->pid, sig) != 0) {
        tpdbErrf(errmsg, "kill -%d %d: %s", sig, (int)proc->pid,
                 strerror(errno));
        return TPDB_IOERR;
    }
    return TPDB_OK;
}

int harnessProcWait(struct harness_proc *proc,
                    int timeout_ms,
                    int *status,
                    char *errmsg)
{
    uint64_t deadline = deadlineAfter(timeout_ms);
    while (!proc->reaped) {
        int st;
        pid_t r = waitpid(proc->pid, &st, WNOHANG);
        if (r == proc->pid) {
            proc->reaped = 1;
            proc->status = st;
            break;
        }
        if (r < 0 && errno != EINTR) {
            tpdbErrf(errmsg, "waitpid %d: %s", (int)proc->pid, strerror(errno));
            return TPDB_IOERR;
        }
        int left = msLeft(deadline);
        if (left == 0) {
            tpdbErrf(errmsg, "pid %d still running", (int)proc->pid);
            return TPDB_TIMEOUT;
        }
        /* Draining output while waiting lets a child blocked on a full
         * pipe reach its exit. */
        int rv = procPoll(
            proc, 0, left < HARNESS_WAIT_TICK_MS ? left : HARNESS_WAIT_TICK_MS,
            errmsg);
        if (rv != TPDB_OK) {
            return rv;
        }
    }
    if (status != NULL) {
        *status = proc->status;
    }
    return TPDB_OK;
}

int harnessProcKill(struct harness_proc *proc, int *status, char *errmsg)
{
    if (!proc->reaped) {
        int rv = harnessProcSignal(proc, SIGKILL, errmsg);
        if (rv != TPDB_OK) {
            return rv;
        }
    }
    return harnessProcWait(proc, HARNESS_KILL_WAIT_MS, status, errmsg);
}

int harnessProcStop(struct harness_proc *proc,
                    int timeout_ms,
                    int *status,
                    char *errmsg)
{
    if (proc->reaped) {
        return harnessProcWait(proc, 0, status, errmsg);
    }
    int rv = harnessProcSignal(proc, SIGTERM, errmsg);
    if (rv == TPDB_OK) {
        rv = harnessProcWait(proc, timeout_ms, status, errmsg);
    }
    if (rv != TPDB_TIMEOUT) {
        return rv;
    }
    rv = harnessProcKill(proc, status, errmsg);
    if (rv == TPDB_OK) {
        tpdbErrf(errmsg, "pid %d ignored SIGTERM; killed", (int)proc->pid);
        rv = TPDB_TIMEOUT;
    }
    return rv;
}

static void registryRemove(struct harness_proc *proc)
{
    struct harness_proc **pp = &registry;
    while (*pp != NULL && *pp != proc) {
        pp = &(*pp)->next;
    }
    if (*pp != NULL) {
        *pp = proc->next;
    }
}

void harnessProcFree(struct harness_proc *proc)
{
    if (proc == NULL) {
        return;
    }
    if (!proc->reaped) {
        harnessProcKill(proc, NULL, NULL);
    }
    harnessProcCloseStdin(proc);
    bufClose(&proc->out);
    bufClose(&proc->err);
    tpdb_free(proc->out.base);
    tpdb_free(proc->err.base);
    registryRemove(proc);
    tpdb_free(proc);
}

void harnessCleanup(void)
{
    /* Signal every group first so they die in parallel, then reap. */
    for (struct harness_proc *p = registry; p != NULL; p = p->next) {
        if (!p->reaped) {
            kill(-p->pid, SIGKILL);
        }
    }
    while (registry != NULL) {
        harnessProcFree(registry);
    }
}

int harnessTeardown(void **state)
{
    (void)state;
    harnessCleanup();
    return 0;
}

unsigned harnessTimerScale(void)
{
#if defined(__SANITIZE_THREAD__)
    return 4;
#else
    return 1;
#endif
}

void harnessScaleParams(const char *in, char *out, size_t size)
{
    static const char *const timers[] = {"election_ms=", "heartbeat_ms="};
    size_t len = 0;
    assert(size > 0);
    out[0] = '\0';
    for (const char *p = in; *p != '\0';) {
        size_t n = strcspn(p, "&");
        int scaled = 0;
        for (size_t t = 0; t < sizeof timers / sizeof timers[0]; t++) {
            size_t k = strlen(timers[t]);
            if (n > k && strncmp(p, timers[t], k) == 0) {
                len += (size_t)snprintf(
                    out + len, size - len, "%s%.*s%lu", len > 0 ? "&" : "",
                    (int)k, p, strtoul(p + k, NULL, 10) * harnessTimerScale());
                scaled = 1;
            }
        }
        if (!scaled) {
            len += (size_t)snprintf(out + len, size - len, "%s%.*s",
                                    len > 0 ? "&" : "", (int)n, p);
        }
        assert(len < size);
        p += n;
        p += *p == '&';
    }
}

int harnessPollUntil(int (*cond)(void *arg),
                     void *arg,
                     int timeout_ms,
                     int interval_ms)
{
    uint64_t deadline = deadlineAfter(timeout_ms);
    if (interval_ms < 1) {
        interval_ms = 1;
    }
    for (;;) {
        if (cond(arg)) {
            return TPDB_OK;
        }
        int left = msLeft(deadline);
        if (left == 0) {
            return TPDB_TIMEOUT;
        }
        sleepMs(left < interval_ms ? left : interval_ms);
    }
}

/* ---- The sqlite3 shell ------------------------------------------------- */

int harnessExtPath(char *path, size_t size, char *errmsg)
{
    const char *root = getenv("TPDB_BUILD_ROOT");
    if (root == NULL || root[0] == '\0') {
        tpdbErrf(errmsg, "TPDB_BUILD_ROOT is not set");
        return TPDB_NOTFOUND;
    }
    int n = snprintf(path, size, "%s/ext/libtpdbraft", root);
    if (n < 0 || (size_t)n >= size) {
        tpdbErrf(errmsg, "extension path too long: %s", root);
        return TPDB_TOOBIG;
    }
    return TPDB_OK;
}

/* Returns a tpdb_malloc'd "<prefix>'<arg>'" or NULL. */
static char *quoteArg(const char *prefix, const char *arg)
{
    size_t n = strlen(prefix) + strlen(arg) + 3;
    char *s = tpdb_malloc(n);
    if (s != NULL) {
        snprintf(s, n, "%s'%s'", prefix, arg);
    }
    return s;
}

/* Copies the first line of text that reports an error ("Error: ...",
 * "Parse error near line ...") into errmsg; returns whether there was one. If
 * any is set, falls back to the first non-empty line. */
static int findErrorLine(const char *text, int any, char *errmsg)
{
    const char *fallback = NULL;
    for (const char *s = text; *s != '\0';) {
        size_t n = strcspn(s, "\n");
        if (n > 0 && fallback == NULL) {
            fallback = s;
        }
        if (strncmp(s, "Error", 5) == 0 ||
            (memmem(s, n, "error near line", 15) != NULL)) {
            tpdbErrf(errmsg, "%.*s", (int)n, s);
            return 1;
        }
        s += n + (s[n] == '\n');
    }
    if (any && fallback != NULL) {
        tpdbErrf(errmsg, "%.*s", (int)strcspn(fallback, "\n"), fallback);
        return 1;
    }
    return 0;
}

/* Collects the finished shell's stdout and judges its exit. */
static int sqliteCollect(struct harness_proc *proc,
                         uint64_t deadline,
                         char **out,
                         char *errmsg)
{
    char *text = NULL;
    char *errtext = NULL;
    int status = 0;
    int rv = harnessProcReadAll(proc, HARNESS_STDOUT, msLeft(deadline), &text,
                                errmsg);
    if (rv == TPDB_OK) {
        rv = harnessProcWait(proc, msLeft(deadline), &status, errmsg);
    }
    if (rv == TPDB_OK) {
        rv = harnessProcReadAll(proc, HARNESS_STDERR, msLeft(deadline),
                                &errtext, errmsg);
    }
    if (rv != TPDB_OK) {
        goto err;
    }
    int failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    if (findErrorLine(errtext, failed, errmsg) || failed) {
        if (failed && errtext[0] == '\0') {
            tpdbErrf(errmsg, "exit status 0x%x", (unsigned)status);
        }
        rv = TPDB_IOERR;
        goto err;
    }
    tpdb_free(errtext);
    *out = text;
    return TPDB_OK;

err:
    tpdb_free(errtext);
    tpdb_free(text);
    return rv;
}

int harnessSqlite3(const char *ext,
                   const char *uri,
                   const char *sql,
                   int timeout_ms,
                   char **out,
                   char *errmsg)
{
    uint64_t deadline = deadlineAfter(timeout_ms);
    const char *bin = getenv("TPDB_SQLITE3");
    const char *argv[12];
    int argc = 0;
    char *load = NULL;
    char *open = NULL;
    struct harness_proc *proc = NULL;
    int rv = TPDB_INVALID;
    if (strchr(uri, '\'') != NULL || (ext != NULL && strchr(ext, '\''))) {
        tpdbErrf(errmsg, "quote in URI or extension path");
        goto err;
    }
    rv = TPDB_NOMEM;
    open = quoteArg(".open ", uri);
    load = ext != NULL ? quoteArg(".load ", ext) : NULL;
    if (open == NULL || (ext != NULL && load == NULL)) {
        tpdbErrf(errmsg, "out of memory");
        goto err;
    }
    argv[argc++] = bin != NULL && bin[0] != '\0' ? bin : "/usr/bin/sqlite3";
    argv[argc++] = "-batch";
    argv[argc++] = "-bail";
    if (load != NULL) {
        argv[argc++] = "-cmd";
        argv[argc++] = load;
    }
    argv[argc++] = "-cmd";
    argv[argc++] = open;
    argv[argc++] = ":memory:";
    argv[argc++] = sql;
    argv[argc] = NULL;
    rv = harnessSpawn(argv, NULL, NULL, &proc, errmsg);
    if (rv != TPDB_OK) {
        goto err;
    }
    harnessProcCloseStdin(proc);
    rv = sqliteCollect(proc, deadline, out, errmsg);
err:
    if (rv != TPDB_OK) {
        tpdbErrWrap(errmsg, "sqlite3 %s", uri);
    }
    harnessProcFree(proc);
    tpdb_free(open);
    tpdb_free(load);
    return rv;
}
