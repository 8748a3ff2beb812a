/*
 * Benchmark of tpdb export and import: a ROWS-row SQLite table (INTEGER
 * PRIMARY KEY, TEXT, REAL, BLOB, indexed INTEGER) is exported to a TPDB
 * file and imported back, each timed; a plain SQLite-to-SQLite copy of the
 * same table in the same run is the baseline for the ratios printed.
 *
 *   bench_migrate [ROWS] [DIR]     (defaults: 100000 rows, a new /tmp dir)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "base/base.h"
#include "shell/tpdb_migrate.h"

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench_migrate: %s: %s\n", what, msg);
    exit(1);
}

static void exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        die(sql, err != NULL ? err : "?");
    }
}

static void makeSource(const char *path, long rows)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    char name[64];
    unsigned char blob[32];
    if (sqlite3_open(path, &db) != SQLITE_OK) {
        die(path, sqlite3_errmsg(db));
    }
    exec(db,
         "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY "
         "KEY, name TEXT NOT NULL, score REAL, data BLOB, n INTEGER); "
         "CREATE INDEX t_n ON t(n); BEGIN");
    sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?, ?, ?, ?, ?)", -1, &st,
                       NULL);
    for (long i = 1; i <= rows; i++) {
        snprintf(name, sizeof name, "user-%08ld@example.com", i * 7919);
        for (size_t j = 0; j < sizeof blob; j++) {
            blob[j] = (unsigned char)(i * 31 + (long)j);
        }
        sqlite3_bind_int64(st, 1, i);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_double(st, 3, (double)i / 7.0);
        sqlite3_bind_blob(st, 4, blob, sizeof blob, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, (i * 104729) % 100003 - 50000);
        if (sqlite3_step(st) != SQLITE_DONE) {
            die("insert", sqlite3_errmsg(db));
        }
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    exec(db, "COMMIT");
    sqlite3_close(db);
}

/* Baseline: the same copy SQLite to SQLite (schema, rows, index). */
static double baseline(const char *src, const char *dest)
{
    sqlite3 *db;
    char *sql;
    if (sqlite3_open(dest, &db) != SQLITE_OK) {
        die(dest, sqlite3_errmsg(db));
    }
    uint64_t t0 = tpdbNowNs();
    sql = sqlite3_mprintf(
        "ATTACH %Q AS src; PRAGMA journal_mode=OFF; "
        "PRAGMA synchronous=OFF; BEGIN; CREATE TABLE t (id "
        "INTEGER PRIMARY KEY, name TEXT NOT NULL, score "
        "REAL, data BLOB, n INTEGER); INSERT INTO t SELECT "
        "* FROM src.t; CREATE INDEX t_n ON t(n); COMMIT",
        src);
    exec(db, sql);
    sqlite3_free(sql);
    sqlite3_close(db);
    return (double)(tpdbNowNs() - t0) / 1e9;
}

static void report(const char *what, long rows, double secs, double base)
{
    printf("%-8s %8ld rows %8.3f s %10.0f rows/s  %5.1fx plain SQLite\n", what,
           rows, secs, (double)rows / secs, secs / base);
}

int main(int argc, char **argv)
{
    long rows = argc > 1 ? atol(argv[1]) : 100000;
    char dir[] = "/tmp/bench_migrate.XXXXXX";
    char src[512], tp[512], back[512], copy[512];
    struct tpdb_migrate_opts opts = {.version = 1,
                                     .progress = TPDB_PROGRESS_NEVER};
    struct tpdb_migrate_stats stats;
    char errmsg[TPDB_ERRMSG_SIZE];
    const char *d = argc > 2 ? argv[2] : mkdtemp(dir);
    if (d == NULL || rows <= 0) {
        die("setup", "usage: bench_migrate [ROWS] [DIR]");
    }
    snprintf(src, sizeof src, "%s/src.db", d);
    snprintf(tp, sizeof tp, "%s/out.tpdb", d);
    snprintf(back, sizeof back, "%s/back.db", d);
    snprintf(copy, sizeof copy, "%s/copy.db", d);
    makeSource(src, rows);
    double base = baseline(src, copy);
    uint64_t t0 = tpdbNowNs();
    if (tpdbExport(src, tp, &opts, &stats, errmsg) != TPDB_OK) {
        die("export", errmsg);
    }
    double exp = (double)(tpdbNowNs() - t0) / 1e9;
    t0 = tpdbNowNs();
    if (tpdbImport(tp, back, &opts, &stats, errmsg) != TPDB_OK) {
        die("import", errmsg);
    }
    double imp = (double)(tpdbNowNs() - t0) / 1e9;
    report("baseline", rows, base, base);
    report("export", rows, exp, base);
    report("import", rows, imp, base);
    const char *files[] = {src, tp, back, copy};
    for (size_t i = 0; i < 4 && argc <= 2; i++) {
        char wal[600];
        snprintf(wal, sizeof wal, "%s-wal", files[i]);
        unlink(wal);
        snprintf(wal, sizeof wal, "%s-shm", files[i]);
        unlink(wal);
        unlink(files[i]);
    }
    if (argc <= 2) {
        rmdir(d);
    }
    return 0;
}
