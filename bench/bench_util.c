/*
 * Helpers for the tpdb benchmarks: latency samples, loopback ports, child
 * processes, temporary trees, status JSON (jansson) and the lz4 ratio of a
 * database file's pages. See bench_util.h.
 */
#include "bench/bench_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <lz4.h>

#include "base/base.h"

extern char **environ;

int benchLatPush(struct bench_lat *l, uint64_t ns)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        uint64_t *p = tpdb_realloc(l->ns, cap * sizeof *p);
        if (p == NULL) {
            return -1;
        }
        l->ns = p;
        l->cap = cap;
    }
    l->ns[l->n++] = ns;
    return 0;
}

int benchLatMerge(struct bench_lat *dst, struct bench_lat *src)
{
    if (dst->n + src->n > dst->cap) {
        size_t cap = dst->n + src->n;
        uint64_t *p = tpdb_realloc(dst->ns, cap * sizeof *p);
        if (p == NULL) {
            return -1;
        }
        dst->ns = p;
        dst->cap = cap;
    }
    if (src->n > 0) {
        memcpy(dst->ns + dst->n, src->ns, src->n * sizeof *src->ns);
    }
    dst->n += src->n;
    src->n = 0;
    return 0;
}

static int cmpU64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void benchLatSort(struct bench_lat *l)
{
    if (l->n > 1) {
        qsort(l->ns, l->n, sizeof *l->ns, cmpU64);
    }
}

uint64_t benchLatPercentile(const struct bench_lat *l, double q)
{
    size_t i;
    if (l->n == 0) {
        return 0;
    }
    /* Nearest rank: the smallest sample with at least q of them at or
     * below it. */
    i = (size_t)(q * (double)l->n + 0.999999);
    if (i > 0) {
        i--;
    }
    if (i >= l->n) {
        i = l->n - 1;
    }
    return l->ns[i];
}

void benchLatFree(struct bench_lat *l)
{
    tpdb_free(l->ns);
    l->ns = NULL;
    l->n = 0;
    l->cap = 0;
}

int benchPickPorts(int *ports, int n, char *errmsg)
{
    int fds[16];
    int opened = 0;
    int rc = -1;
    if (n < 1 || n > 16) {
        tpdbErrf(errmsg, "pick ports: %d ports asked, 1..16 allowed", n);
        return -1;
    }
    for (; opened < n; opened++) {
        struct sockaddr_in sa;
        socklen_t len = sizeof sa;
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fds[opened] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[opened] < 0) {
            tpdbErrf(errmsg, "pick ports: socket: %s", strerror(errno));
            goto err_close;
        }
        if (bind(fds[opened], (struct sockaddr *)&sa, sizeof sa) != 0 ||
            getsockname(fds[opened], (struct sockaddr *)&sa, &len) != 0) {
            tpdbErrf(errmsg, "pick ports: bind: %s", strerror(errno));
            close(fds[opened]);
            goto err_close;
        }
        ports[opened] = ntohs(sa.sin_port);
    }
    rc = 0;
err_close:
    while (opened > 0) {
        close(fds[--opened]);
    }
    return rc;
}

int benchSpawn(char *const argv[], pid_t *pid, char *errmsg)
{
    int rc = posix_spawn(pid, argv[0], NULL, NULL, argv, environ);
    if (rc != 0) {
        tpdbErrf(errmsg, "spawn %s: %s", argv[0], strerror(rc));
        return -1;
    }
    return 0;
}

int benchChildExited(pid_t pid)
{
    int status;
    return waitpid(pid, &status, WNOHANG) == pid;
}

void benchKill(pid_t pid)
{
    int status;
    if (pid <= 0) {
        return;
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
}

static int removeEntryCb(const char *path,
                         const struct stat *sb,
                         int flag,
                         struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    /* Keep going on failure so that as much as possible is removed. */
    if (remove(path) != 0) {
        fprintf(stderr, "bench: cannot remove %s: %s\n", path, strerror(errno));
    }
    return 0;
}

int benchRemoveTree(const char *path)
{
    if (nftw(path, removeEntryCb, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        return -1;
    }
    return access(path, F_OK) == 0 ? -1 : 0;
}

int benchParseStatus(const char *json, struct bench_status *st, char *errmsg)
{
    json_error_t jerr;
    json_t *root = json_loads(json, 0, &jerr);
    json_t *leader;
    const char *role = NULL;
    json_int_t id = 0;
    json_int_t applied = 0;
    int rc = -1;
    if (root == NULL) {
        tpdbErrf(errmsg, "status: %s", jerr.text);
        return -1;
    }
    if (json_unpack_ex(root, &jerr, 0, "{s:I,s:s,s:I,s:o}", "id", &id, "role",
                       &role, "applied_index", &applied, "leader_id",
                       &leader) != 0) {
        tpdbErrf(errmsg, "status: %s", jerr.text);
        goto err_root;
    }
    st->id = (long long)id;
    st->applied_index = (long long)applied;
    st->leader_id =
        json_is_integer(leader) ? (long long)json_integer_value(leader) : 0;
    snprintf(st->role, sizeof st->role, "%s", role);
    rc = 0;
err_root:
    json_decref(root);
    return rc;
}

/* Compresses `len` bytes of src, returning the compressed size or 0. */
static uint64_t lz4Size(const uint8_t *src, size_t len, char *dst, int cap)
{
    int n = LZ4_compress_default((const char *)src, dst, (int)len, cap);
    return n > 0 ? (uint64_t)n : 0;
}

/* Reads page `pgno` (1-based) into buf after a 4-byte page number. */
static int readPage(int fd, uint32_t pgno, uint32_t pageSize, uint8_t *buf)
{
    off_t off = (off_t)(pgno - 1) * pageSize;
    tpdbPut32(buf, pgno);
    return pread(fd, buf + 4, pageSize, off) == (ssize_t)pageSize ? 0 : -1;
}

/* Page size and count from the header of the database file open on fd. */
static int dbGeometry(int fd, uint32_t *pageSize, uint32_t *pages, char *errmsg)
{
    uint8_t hdr[100];
    off_t size = lseek(fd, 0, SEEK_END);
    if (pread(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr ||
        memcmp(hdr, "SQLite format 3", 16) != 0) {
        tpdbErrf(errmsg, "not an SQLite database (or empty)");
        return -1;
    }
    *pageSize = ((uint32_t)hdr[16] << 8) | hdr[17];
    if (*pageSize == 1) {
        *pageSize = 65536;
    }
    if (*pageSize < 512 || (*pageSize & (*pageSize - 1)) != 0 || size < 0) {
        tpdbErrf(errmsg, "bad page size %u", *pageSize);
        return -1;
    }
    *pages = (uint32_t)(size / *pageSize);
    return 0;
}

int benchLz4Pages(const char *path,
                  unsigned group,
                  struct bench_lz4 *out,
                  char *errmsg)
{
    uint32_t pageSize;
    uint32_t pages;
    uint8_t *buf = NULL;
    char *dst = NULL;
    size_t rec;
    int cap;
    int rc = -1;
    int fd = open(path, O_RDONLY);
    memset(out, 0, sizeof *out);
    if (fd < 0) {
        tpdbErrf(errmsg, "open %s: %s", path, strerror(errno));
        return -1;
    }
    if (dbGeometry(fd, &pageSize, &pages, errmsg) != 0) {
        tpdbErrWrap(errmsg, "%s", path);
        goto err_fd;
    }
    group = group ? group : 1;
    rec = 4 + (size_t)pageSize;
    cap = LZ4_compressBound((int)(rec * group));
    buf = tpdb_malloc(rec * group);
    dst = tpdb_malloc((size_t)cap);
    if (buf == NULL || dst == NULL) {
        tpdbErrf(errmsg, "out of memory");
        goto err_mem;
    }
    for (uint32_t pg = 1; pg <= pages; pg += group) {
        unsigned k = 0;
        for (; k < group && pg + k <= pages; k++) {
            if (readPage(fd, pg + k, pageSize, buf + k * rec) != 0) {
                tpdbErrf(errmsg, "%s: read page %u failed", path, pg + k);
                goto err_mem;
            }
            out->compressed += lz4Size(buf + k * rec, rec, dst, cap);
        }
        out->compressedN += lz4Size(buf, rec * k, dst, cap);
        out->pages += k;
        out->raw += rec * k;
    }
    rc = 0;
err_mem:
    tpdb_free(dst);
    tpdb_free(buf);
err_fd:
    close(fd);
    return rc;
}

int benchSyncProbe(const char *dir, int n, struct bench_lat *lat, char *errmsg)
{
    char path[4096];
    uint8_t block[4096];
    int rc = -1;
    int fd;
    snprintf(path, sizeof path, "%s/sync-probe", dir);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        tpdbErrf(errmsg, "open %s: %s", path, strerror(errno));
        return -1;
    }
    memset(block, 0x5a, sizeof block);
    /* Allocate the blocks first, as SQLite reuses its WAL and raft
     * preallocates its segments: what is timed is a data-only sync. */
    for (int i = 0; i < n; i++) {
        if (pwrite(fd, block, sizeof block, (off_t)i * 4096) !=
            (ssize_t)sizeof block) {
            tpdbErrf(errmsg, "write %s: %s", path, strerror(errno));
            goto err_fd;
        }
    }
    if (fsync(fd) != 0) {
        tpdbErrf(errmsg, "fsync %s: %s", path, strerror(errno));
        goto err_fd;
    }
    for (int i = 0; i < n; i++) {
        uint64_t t0 = tpdbNowNs();
        block[0] = (uint8_t)i;
        if (pwrite(fd, block, sizeof block, (off_t)i * 4096) !=
                (ssize_t)sizeof block ||
            fdatasync(fd) != 0) {
            tpdbErrf(errmsg, "write %s: %s", path, strerror(errno));
            goto err_fd;
        }
        if (benchLatPush(lat, tpdbNowNs() - t0) != 0) {
            tpdbErrf(errmsg, "out of memory");
            goto err_fd;
        }
    }
    rc = 0;
err_fd:
    close(fd);
    unlink(path);
    return rc;
}
