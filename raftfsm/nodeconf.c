/*
 * Node identity files, peers parsing and the data-directory lock (see
 * nodeconf.h).
 */
#include "raftfsm/nodeconf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

int tpdbAddressValid(const char *address)
{
    const char *colon = strrchr(address, ':');
    char *end = NULL;
    long port;
    if (colon == NULL || colon == address ||
        strlen(address) >= TPDB_ADDRESS_MAX) {
        return 0;
    }
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    return errno == 0 && end != colon + 1 && *end == '\0' && port >= 0 &&
           port <= 65535;
}

/* Parses one "id@host:port" item of length len. */
static int peerParse(const char *item,
                     size_t len,
                     struct raft_configuration *conf,
                     char *errmsg)
{
    char buf[TPDB_ADDRESS_MAX + 32];
    char *at;
    char *end = NULL;
    unsigned long long id;
    if (len == 0 || len >= sizeof buf) {
        tpdbErrf(errmsg, "peers: bad item '%.*s'", (int)len, item);
        return TPDB_INVALID;
    }
    memcpy(buf, item, len);
    buf[len] = '\0';
    at = strchr(buf, '@');
    if (at == NULL) {
        tpdbErrf(errmsg, "peers: '%s' is not id@host:port", buf);
        return TPDB_INVALID;
    }
    *at = '\0';
    errno = 0;
    id = strtoull(buf, &end, 10);
    if (errno != 0 || end == buf || *end != '\0' || id == 0) {
        tpdbErrf(errmsg, "peers: bad node id '%s'", buf);
        return TPDB_INVALID;
    }
    if (!tpdbAddressValid(at + 1)) {
        tpdbErrf(errmsg, "peers: bad address '%s' for node %llu", at + 1, id);
        return TPDB_INVALID;
    }
    int rv = raft_configuration_add(conf, id, at + 1, RAFT_VOTER);
    if (rv == RAFT_NOMEM) {
        return TPDB_NOMEM;
    }
    if (rv != 0) {
        tpdbErrf(errmsg, "peers: node %llu at %s: %s", id, at + 1,
                 raft_strerror(rv));
        return TPDB_INVALID;
    }
    return TPDB_OK;
}

int tpdbPeersParse(const char *peers,
                   struct raft_configuration *conf,
                   char *errmsg)
{
    const char *p = peers;
    int rc = TPDB_OK;
    while (rc == TPDB_OK && *p != '\0') {
        size_t len = strcspn(p, ",");
        rc = peerParse(p, len, conf, errmsg);
        p += len;
        if (*p == ',') {
            p++;
        }
    }
    if (rc == TPDB_OK && conf->n == 0) {
        tpdbErrf(errmsg, "peers: empty list");
        rc = TPDB_INVALID;
    }
    return rc;
}

int tpdbNodeConfLoad(const char *meta_dir,
                     uint64_t *id,
                     char *address,
                     size_t size,
                     char *errmsg)
{
    char path[4096];
    char line[TPDB_ADDRESS_MAX + 32];
    int have = 0;
    snprintf(path, sizeof path, "%s/node.conf", meta_dir);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT) {
            return TPDB_NOTFOUND;
        }
        tpdbErrf(errmsg, "open %s: %s", path, strerror(errno));
        return TPDB_IOERR;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "id=", 3) == 0) {
            *id = strtoull(line + 3, NULL, 10);
            have |= 1;
        } else if (strncmp(line, "address=", 8) == 0) {
            snprintf(address, size, "%s", line + 8);
            have |= 2;
        }
    }
    fclose(f);
    if (have != 3 || *id == 0) {
        tpdbErrf(errmsg, "%s: missing id or address", path);
        return TPDB_CORRUPT;
    }
    return TPDB_OK;
}

int tpdbNodeConfSave(const char *meta_dir,
                     uint64_t id,
                     const char *address,
                     char *errmsg)
{
    char path[4096];
    char tmp[4096 + 8];
    char body[TPDB_ADDRESS_MAX + 64];
    int n = snprintf(body, sizeof body, "id=%llu\naddress=%s\n",
                     (unsigned long long)id, address);
    snprintf(path, sizeof path, "%s/node.conf", meta_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        tpdbErrf(errmsg, "create %s: %s", tmp, strerror(errno));
        return TPDB_IOERR;
    }
    if (write(fd, body, (size_t)n) != n || fsync(fd) != 0) {
        tpdbErrf(errmsg, "write %s: %s", tmp, strerror(errno));
        close(fd);
        return TPDB_IOERR;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        tpdbErrf(errmsg, "rename %s: %s", tmp, strerror(errno));
        return TPDB_IOERR;
    }
    int dfd = open(meta_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return TPDB_OK;
}

int tpdbNodeLock(const char *meta_dir, int *fd, char *errmsg)
{
    char path[4096];
    char pid[32];
    snprintf(path, sizeof path, "%s/lock", meta_dir);
    int lfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lfd < 0) {
        tpdbErrf(errmsg, "open %s: %s", path, strerror(errno));
        return TPDB_IOERR;
    }
    if (flock(lfd, LOCK_EX | LOCK_NB) != 0) {
        ssize_t got = pread(lfd, pid, sizeof pid - 1, 0);
        pid[got > 0 ? got : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        tpdbErrf(errmsg,
                 "the node of this directory runs in process %s: this "
                 "connection is read-only",
                 pid[0] ? pid : "?");
        close(lfd);
        return TPDB_READONLY;
    }
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(lfd, 0) != 0 || pwrite(lfd, pid, (size_t)n, 0) != n) {
        tpdbLog(TPDB_LOG_WARN, "write pid to %s: %s", path, strerror(errno));
    }
    *fd = lfd;
    return TPDB_OK;
}

int tpdbNodeLockHeld(const char *meta_dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/lock", meta_dir);
    int lfd = open(path, O_RDONLY | O_CLOEXEC);
    if (lfd < 0) {
        return 0;
    }
    int held = flock(lfd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(lfd); /* drops the lock if this probe took it */
    return held;
}

int tpdbMkdir(const char *path, char *errmsg)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        tpdbErrf(errmsg, "mkdir %s: %s", path, strerror(errno));
        return TPDB_IOERR;
    }
    return TPDB_OK;
}
