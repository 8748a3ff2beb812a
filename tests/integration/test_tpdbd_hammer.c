/*
 * The short version of TrashPandaDB's "hammer" load test on real tpdbd
 * processes, started like the original with --peer and --client-peer
 * (the cluster test covers forwarding without --client-peer): 3 nodes,
 * 20 writer threads for HAMMER_SECONDS (default 5, or
 * $TPDB_HAMMER_SECONDS) each sending `propose INSERT INTO hammer ...
 * VALUES('<w>_<seq>', w, seq, port)` on a new connection per request to
 * node (w + seq) % 3, so two thirds are forwarded. Pass: no write failed,
 * and every node ends with exactly the acknowledged ids (TrashPandaDB's
 * hammer only compared counts).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/tpdbds.h"

#define N 3
#define WRITERS 20
#define WAIT_MS 30000

enum { NOT_SENT = 0, ACKED, FAILED, UNKNOWN };

struct writer {
    int w;
    const unsigned *ports;
    uint64_t deadline;
    int n;         /* writes sent */
    char *outcome; /* per seq (1-based), grown as needed */
    size_t cap;
    char error[256]; /* the first failure */
};

static struct tpdbds c;

static int outcomeOf(json_t *o, struct writer *wr)
{
    const char *e = json_string_value(json_object_get(o, "error"));
    if (json_is_true(json_object_get(o, "ok"))) {
        return ACKED;
    }
    if (wr->error[0] == '\0') {
        snprintf(wr->error, sizeof wr->error, "%s", e ? e : "no reply");
    }
    if (o == NULL || (e != NULL && (strncmp(e, "outcome unknown", 15) == 0 ||
                                    strncmp(e, "no reply", 8) == 0))) {
        return UNKNOWN;
    }
    return FAILED;
}

static void *writerThread(void *arg)
{
    struct writer *wr = arg;
    char line[256];
    while (tpdbNowMs() < wr->deadline) {
        int seq = ++wr->n;
        if ((size_t)seq >= wr->cap) {
            size_t cap = wr->cap ? wr->cap * 2 : 1024;
            char *p = realloc(wr->outcome, cap);
            assert_non_null(p);
            memset(p + wr->cap, 0, cap - wr->cap);
            wr->outcome = p;
            wr->cap = cap;
        }
        unsigned port = wr->ports[(wr->w + seq) % N];
        snprintf(line, sizeof line,
                 "{\"action\":\"propose\",\"sql\":\"INSERT INTO hammer "
                 "VALUES(?, ?, ?, ?)\",\"params\":[\"%d_%d\",%d,%d,%u]}",
                 wr->w, seq, wr->w, seq, port);
        json_t *o = tpdbdsRequest(port, line);
        wr->outcome[seq] = (char)outcomeOf(o, wr);
        json_decref(o);
    }
    return NULL;
}

struct check {
    struct writer *writers;
    char why[256];
};

/* Whether node i holds exactly the acknowledged ids, plus possibly some
 * of unknown outcome, and no failed one. */
static int nodeMatches(struct check *k, int i, long long *count)
{
    json_t *o = tpdbdsCall(&c, i,
                           "{\"action\":\"local_query\",\"sql\":\"SELECT "
                           "writer, seq FROM hammer\"}");
    json_t *rows = json_object_get(o, "rows"), *row;
    size_t r;
    char *seen[WRITERS];
    int ok = rows != NULL;
    for (int w = 0; w < WRITERS; w++) {
        seen[w] = calloc(k->writers[w].cap + 1, 1);
    }
    json_array_foreach(rows, r, row)
    {
        long long w = json_integer_value(json_array_get(row, 0));
        long long seq = json_integer_value(json_array_get(row, 1));
        assert_true(w >= 0 && w < WRITERS && seq >= 1 &&
                    seq <= k->writers[w].n);
        seen[w][seq] = 1;
    }
    for (int w = 0; ok && w < WRITERS; w++) {
        for (int seq = 1; ok && seq <= k->writers[w].n; seq++) {
            int st = k->writers[w].outcome[seq];
            if ((st == ACKED && !seen[w][seq]) ||
                (st == FAILED && seen[w][seq])) {
                snprintf(k->why, sizeof k->why, "n%d: %d_%d state %d seen %d",
                         i + 1, w, seq, st, seen[w][seq]);
                ok = 0;
            }
        }
    }
    for (int w = 0; w < WRITERS; w++) {
        free(seen[w]);
    }
    *count = (long long)json_array_size(rows);
    json_decref(o);
    return ok;
}

static int allMatch(void *arg)
{
    struct check *k = arg;
    long long first = -1, count;
    for (int i = 0; i < N; i++) {
        if (!nodeMatches(k, i, &count)) {
            return 0;
        }
        if (first >= 0 && count != first) {
            snprintf(k->why, sizeof k->why, "n%d has %lld rows, n1 %lld", i + 1,
                     count, first);
            return 0;
        }
        first = count;
    }
    return 1;
}

static void startCluster(void)
{
    tpdbdsInit(&c, N, 1);
    tpdbdsStartAll(&c, NULL);
}

static void testHammer(void **state)
{
    static struct writer writers[WRITERS];
    pthread_t threads[WRITERS];
    const char *env = getenv("TPDB_HAMMER_SECONDS");
    int seconds = env != NULL ? atoi(env) : 5;
    (void)state;
    startCluster();
    int leader = tpdbdsFindLeader(&c, WAIT_MS);
    json_t *o = tpdbdsCall(&c, leader,
                           "{\"action\":\"propose\",\"sql\":\"CREATE TABLE "
                           "hammer(id TEXT PRIMARY KEY, writer INTEGER NOT "
                           "NULL, seq INTEGER NOT NULL, port INTEGER NOT "
                           "NULL)\"}");
    assert_true(json_is_true(json_object_get(o, "ok")));
    json_decref(o);
    uint64_t start = tpdbNowMs();
    for (int w = 0; w < WRITERS; w++) {
        writers[w] = (struct writer){
            .w = w, .ports = c.client, .deadline = start + 1000u * seconds};
        assert_int_equal(
            pthread_create(&threads[w], NULL, writerThread, &writers[w]), 0);
    }
    int sent = 0, acked = 0, failed = 0;
    for (int w = 0; w < WRITERS; w++) {
        pthread_join(threads[w], NULL);
        sent += writers[w].n;
        for (int seq = 1; seq <= writers[w].n; seq++) {
            acked += writers[w].outcome[seq] == ACKED;
            failed += writers[w].outcome[seq] != ACKED;
        }
        if (writers[w].error[0] != '\0') {
            print_message("writer %d: first failure: %s\n", w,
                          writers[w].error);
        }
    }
    uint64_t ms = tpdbNowMs() - start;
    print_message(
        "hammer: %d writes in %llu ms = %.0f writes/s, %d acked, "
        "%d failed\n",
        sent, (unsigned long long)ms, sent * 1000.0 / (double)ms, acked,
        failed);
    assert_true(acked > 0);
    assert_int_equal(failed, 0);
    struct check k = {writers, ""};
    if (harnessPollUntil(allMatch, &k, WAIT_MS, 100) != TPDB_OK) {
        fail_msg("nodes do not hold the acknowledged ids: %s", k.why);
    }
    for (int w = 0; w < WRITERS; w++) {
        free(writers[w].outcome);
    }
    tpdbdsClose(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testHammer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
