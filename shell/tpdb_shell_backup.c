/*
 * The tpdb shell's `.backup --local FILE` at a tpdbd node: the node
 * streams a consistent copy of the database back (action backup with
 * "stream":true, README "Cluster and file actions") and the shell writes
 * it to FILE on its own machine. The chunks go to FILE.partial (created
 * new, mode 0600) as they come, each checked for its offset, while a
 * SHA-256 runs over them; only when the final line's size and checksum
 * match is the file fsynced and renamed to FILE (and its directory
 * fsynced). Any failure removes FILE.partial: no partial file is left.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "shell/tpdb_client.h"
#include "shell/tpdb_shell_int.h"
#include "shell/tpdbd_sql.h"

/* The node copies the whole database before its first line. */
#define FIRST_MS (10 * 60 * 1000)
#define CHUNK_MS 60000

struct stream {
    int fd;
    long long written;
    crypto_hash_sha256_state h;
    char err[SHELL_ERR_MAX];
};

static int writeAll(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One chunk line {"offset":N,"data":"<base64>"}: appended. */
static int takeChunk(struct stream *s, json_t *line)
{
    json_t *data = json_object_get(line, "data");
    json_t *off = json_object_get(line, "offset");
    unsigned char *buf = NULL;
    size_t len = 0;
    if (!json_is_integer(off) || json_integer_value(off) != s->written) {
        snprintf(s->err, sizeof s->err,
                 "backup stream: a chunk at offset %lld, expected %lld",
                 (long long)json_integer_value(off), s->written);
        return -1;
    }
    if (tpdbdBase64Decode(json_string_value(data), json_string_length(data),
                          &buf, &len) != 0) {
        snprintf(s->err, sizeof s->err,
                 "backup stream: the chunk at %lld is not base64", s->written);
        return -1;
    }
    int rc = writeAll(s->fd, buf, len);
    if (rc != 0) {
        snprintf(s->err, sizeof s->err, "backup: write: %s", strerror(errno));
    } else {
        crypto_hash_sha256_update(&s->h, buf, len);
        s->written += (long long)len;
    }
    free(buf);
    return rc;
}

/* The final line: ok, done, the size and checksum of what was written. */
static int checkEnd(struct stream *s, json_t *line, long long announced)
{
    unsigned char digest[crypto_hash_sha256_BYTES];
    char hex[2 * crypto_hash_sha256_BYTES + 1];
    const char *sha = json_string_value(json_object_get(line, "sha256"));
    long long bytes =
        (long long)json_integer_value(json_object_get(line, "bytes"));
    if (!json_is_true(json_object_get(line, "ok"))) {
        const char *e = json_string_value(json_object_get(line, "error"));
        snprintf(s->err, sizeof s->err, "%s", e != NULL ? e : "bad reply");
        return -1;
    }
    crypto_hash_sha256_final(&s->h, digest);
    sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
    if (bytes != s->written || bytes != announced || sha == NULL ||
        strcmp(sha, hex) != 0) {
        snprintf(s->err, sizeof s->err,
                 "backup stream: got %lld bytes with sha256 %s; the node "
                 "sent %lld (announced %lld) with sha256 %s",
                 s->written, hex, bytes, announced, sha != NULL ? sha : "-");
        return -1;
    }
    return 0;
}

/* Reads the stream after its first line until its last. */
static int receive(struct stream *s, struct tpdb_client *c, long long total)
{
    for (;;) {
        json_t *line = NULL;
        int rc = tpdbClientNext(c, CHUNK_MS, &line);
        if (rc != TPDB_CLIENT_OK) {
            snprintf(s->err, sizeof s->err,
                     "backup stream ended after %lld of %lld bytes: %s",
                     s->written, total, c->errmsg);
            return -1;
        }
        rc = json_object_get(line, "data") != NULL ? takeChunk(s, line)
                                                   : checkEnd(s, line, total);
        int last = json_object_get(line, "data") == NULL;
        json_decref(line);
        if (rc != 0 || last) {
            return rc;
        }
    }
}

/* Sends the request and checks its first line; *total gets the size. */
static int begin(struct shell *sh,
                 struct stream *s,
                 struct tpdb_client *c,
                 long long *total,
                 long long *pages)
{
    json_t *req = json_pack("{s:s,s:b}", "action", "backup", "stream", 1);
    json_t *reply = NULL;
    if (sh->db != NULL) {
        json_object_set_new(req, "db", json_string(sh->db));
    }
    int rc = tpdbClientCall(c, req, FIRST_MS, &reply);
    json_decref(req);
    const char *e = json_string_value(json_object_get(reply, "error"));
    if (rc != TPDB_CLIENT_OK) {
        snprintf(s->err, sizeof s->err, "backup: %s", c->errmsg);
    } else if (e != NULL) {
        snprintf(s->err, sizeof s->err, "%s%s",
                 strncmp(e, "Missing hash key", 16) == 0 ||
                         strncmp(e, "unknown action", 14) == 0
                     ? "this tpdbd cannot stream a backup: "
                     : "",
                 e);
    } else if (!json_is_true(json_object_get(reply, "ok")) ||
               !json_is_integer(json_object_get(reply, "bytes"))) {
        snprintf(s->err, sizeof s->err, "backup: unexpected first line");
    } else {
        *total = (long long)json_integer_value(json_object_get(reply, "bytes"));
        *pages = (long long)json_integer_value(json_object_get(reply, "pages"));
        json_decref(reply);
        return 0;
    }
    json_decref(reply);
    return -1;
}

static int fsyncDir(const char *path)
{
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd >= 0 && fsync(fd) == 0 ? 0 : -1;
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

/* Streams into s->fd (partial) and publishes it as path. */
static int streamTo(struct shell *sh,
                    struct stream *s,
                    const char *partial,
                    const char *path)
{
    struct tpdb_client c;
    long long total = 0, pages = 0;
    tpdbClientInit(&c, remoteAddr(sh->remote), &shellInterrupted);
    int rc = begin(sh, s, &c, &total, &pages);
    if (rc == 0) {
        rc = receive(s, &c, total);
    }
    tpdbClientClose(&c);
    if (rc == 0 && (fsync(s->fd) != 0 || rename(partial, path) != 0 ||
                    fsyncDir(path) != 0)) {
        snprintf(s->err, sizeof s->err, "backup: writing %s: %s", path,
                 strerror(errno));
        rc = -1;
    }
    if (rc == 0) {
        fprintf(sh->out,
                "backup of %s from %s: %lld pages, %lld bytes, "
                "sha256 verified, written to %s\n",
                sh->db != NULL ? sh->db : "data.db", remoteAddr(sh->remote),
                pages, total, path);
    }
    return rc;
}

int shellBackupStream(struct shell *sh, const char *path)
{
    char partial[PATH_MAX];
    struct stat sb;
    struct stream s = {.fd = -1};
    if (lstat(path, &sb) == 0) {
        shellError("backup: %s exists: give a new path", path);
        return -1;
    }
    if ((size_t)snprintf(partial, sizeof partial, "%s.partial", path) >=
        sizeof partial) {
        shellError("backup: path too long");
        return -1;
    }
    s.fd = open(partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (s.fd < 0) {
        shellError("backup: create %s: %s", partial, strerror(errno));
        return -1;
    }
    if (sodium_init() < 0) {
        snprintf(s.err, sizeof s.err, "backup: libsodium did not start");
    }
    crypto_hash_sha256_init(&s.h);
    int rc = s.err[0] == '\0' ? streamTo(sh, &s, partial, path) : -1;
    close(s.fd);
    if (rc != 0) {
        unlink(partial);
        shellError("%s (nothing written to %s)", s.err, path);
    }
    return rc;
}
