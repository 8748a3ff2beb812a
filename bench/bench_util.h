/*
 * Helpers for the tpdb benchmarks: latency samples and percentiles, loopback
 * port picking, child processes, temporary directory removal, parsing the
 * node status JSON and measuring the lz4 compression ratio of a database
 * file's pages. Programs only: nothing here is part of a library.
 */
#ifndef TPDB_BENCH_UTIL_H
#define TPDB_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A growable array of latency samples in nanoseconds. Zero-initialise it;
 * release it with benchLatFree. */
struct bench_lat {
    uint64_t *ns;
    size_t n;
    size_t cap;
};

/* Appends one sample. Returns 0, or -1 when out of memory (the sample is
 * dropped and the array stays valid). */
int benchLatPush(struct bench_lat *l, uint64_t ns);

/* Moves every sample of src to the end of dst; src is left empty but
 * usable. Returns 0, or -1 when out of memory (both unchanged). */
int benchLatMerge(struct bench_lat *dst, struct bench_lat *src);

/* Sorts the samples; call once before benchLatPercentile. */
void benchLatSort(struct bench_lat *l);

/* The sample at quantile q (0 < q <= 1) of a sorted array, in nanoseconds;
 * 0 when the array is empty. */
uint64_t benchLatPercentile(const struct bench_lat *l, double q);

/* Frees the samples; the array may be reused afterwards. */
void benchLatFree(struct bench_lat *l);

/* Picks `n` distinct free TCP ports on 127.0.0.1 by binding port 0 with all
 * n sockets open at once, then closing them. Returns 0, or -1 with errmsg
 * (TPDB_ERRMSG_SIZE bytes) saying which system call failed. */
int benchPickPorts(int *ports, int n, char *errmsg);

/* Starts argv[0] with arguments argv (NULL-terminated), inheriting stdio.
 * On 0 *pid is the child's id; -1 with errmsg otherwise. */
int benchSpawn(char *const argv[], pid_t *pid, char *errmsg);

/* Whether child `pid` has exited (it is then reaped): 1 yes, 0 no. */
int benchChildExited(pid_t pid);

/* Kills child `pid` with SIGKILL and reaps it. A pid <= 0 is ignored. */
void benchKill(pid_t pid);

/* Removes the directory tree at path (files, subdirectories, then the
 * directory itself), not following symbolic links. Returns 0, or -1 if
 * some entry could not be removed. */
int benchRemoveTree(const char *path);

/* The fields of a tpdb_status() JSON document the benchmark uses. */
struct bench_status {
    long long id;
    long long leader_id;
    long long applied_index;
    char role[32]; /* "leader", "follower", "candidate", ... */
};

/* Parses the JSON text of tpdb_status() into *st. Returns 0, or -1 with
 * errmsg when the text is not a JSON object with those fields. */
int benchParseStatus(const char *json, struct bench_status *st, char *errmsg);

/* Result of benchLz4Pages. */
struct bench_lz4 {
    uint64_t pages;       /* pages read */
    uint64_t raw;         /* bytes as a log entry would carry them */
    uint64_t compressed;  /* bytes after lz4, one block per page */
    uint64_t compressedN; /* bytes after lz4, one block per `group` pages */
};

/* Reads the database file at path page by page (page size from its
 * header) and compresses each page, prefixed by its 4-byte page number as
 * in a log entry's payload, with lz4: alone (a one-page transaction, the
 * usual one-row INSERT), and in blocks of `group` consecutive pages (a
 * larger transaction). Returns 0, or -1 with errmsg. */
int benchLz4Pages(const char *path,
                  unsigned group,
                  struct bench_lz4 *out,
                  char *errmsg);

/* Measures the disk under dir: `n` overwrites of one 4 KiB block of an
 * already written and synced file, each followed by fdatasync; one latency
 * sample per write in lat. The file is removed. Returns 0, or -1 with
 * errmsg. */
int benchSyncProbe(const char *dir, int n, struct bench_lat *lat, char *errmsg);

#endif /* TPDB_BENCH_UTIL_H */
