/*
 * tpdb-testnode: a node process for integration tests. It links
 * libtpdbraft, opens one database URI through the tpdb VFS (which starts
 * the node) and then serves one command per stdin line, answering one line
 * on stdout:
 *   exec <sql>     -> "ok <changes>" | "err <extended code> <message>"
 *   query <sql>    -> "row <col>|<col>..." per row, then "end"
 *                     | "err <code> <message>"
 *   status         -> "status <json>"
 *   quit           -> exits 0
 * It prints "ready" once the database is open. Errors carry tpdb's reason
 * (tpdb_errmsg) after SQLite's message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "ext/tpdb.h"

static void reply(const char *word, const char *text)
{
    printf("%s %s\n", word, text);
    fflush(stdout);
}

static void printErr(sqlite3 *db)
{
    const char *why = tpdb_errmsg();
    printf("err %d %s%s%s\n", sqlite3_extended_errcode(db), sqlite3_errmsg(db),
           why[0] ? ": " : "", why);
    fflush(stdout);
}

static void doExec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        sqlite3_free(msg);
        printErr(db);
        return;
    }
    printf("ok %d\n", sqlite3_changes(db));
    fflush(stdout);
}

static void doQuery(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int rc;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        printErr(db);
        return;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        fputs("row ", stdout);
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            const unsigned char *v = sqlite3_column_text(st, i);
            printf("%s%s", i ? "|" : "", v ? (const char *)v : "NULL");
        }
        putchar('\n');
    }
    if (rc != SQLITE_DONE) {
        sqlite3_finalize(st);
        printErr(db);
        return;
    }
    sqlite3_finalize(st);
    puts("end");
    fflush(stdout);
}

static void doStatus(sqlite3 *db)
{
    char *json = NULL;
    if (tpdb_status(db, &json) != SQLITE_OK) {
        reply("err 1", "no status: not a replicated database");
        return;
    }
    reply("status", json);
    sqlite3_free(json);
}

int main(int argc, char **argv)
{
    sqlite3 *db = NULL;
    size_t cap = 1 << 16;
    char *line;
    if (argc != 2) {
        fprintf(stderr, "usage: %s <database URI>\n", argv[0]);
        return 2;
    }
    if (tpdb_register() != SQLITE_OK) {
        fprintf(stderr, "tpdb_register failed\n");
        return 1;
    }
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI;
    if (sqlite3_open_v2(argv[1], &db, flags, "tpdb") != SQLITE_OK) {
        const char *why = tpdb_errmsg();
        fprintf(stderr, "open %s: %s%s%s\n", argv[1],
                db ? sqlite3_errmsg(db) : "out of memory", why[0] ? ": " : "",
                why);
        return 1;
    }
    sqlite3_busy_timeout(db, 5000);
    line = malloc(cap);
    if (line == NULL) {
        return 1;
    }
    puts("ready");
    fflush(stdout);
    while (fgets(line, (int)cap, stdin) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "exec ", 5) == 0) {
            doExec(db, line + 5);
        } else if (strncmp(line, "query ", 6) == 0) {
            doQuery(db, line + 6);
        } else if (strcmp(line, "status") == 0) {
            doStatus(db);
        } else if (strcmp(line, "quit") == 0) {
            break;
        } else {
            reply("err 1 unknown command:", line);
        }
    }
    free(line);
    sqlite3_close(db);
    tpdb_shutdown();
    return 0;
}
