/*
 * tpdbd's DNS discovery with real tpdbd processes and the system resolver:
 * a name with three loopback addresses (127.0.0.11-13) in a hosts file.
 * The test enters a mount namespace of its own (unshare(CLONE_NEWNS)) and
 * bind-mounts a temporary hosts file over /etc/hosts there, so getaddrinfo
 * in tpdbd reads it while the machine's /etc/hosts is never touched; it is
 * skipped where that is not allowed (no CAP_SYS_ADMIN). Shown: the first
 * node, started alone, logs the failed lookup and then the size guard and
 * resolves again instead of exiting; once the name has three addresses
 * the other two start, the three bootstrap with their IPs as node ids,
 * agree on raft ids, forward a write; a restart keeps its id. At the
 * --ready-ms deadline the guard and the failed lookup exit 1 with
 * TrashPandaDB's texts, and SIGTERM while it waits exits 0. Without the
 * privilege for a mount namespace the program exits 77, which meson reports as
 * skipped.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/tpdbds.h"

#define N 3
#define NAME "tpdbd-peers.test"
#define EXPECT_MS 30000
#define WAIT_MS 60000

static const char *const ips[N] = {"127.0.0.11", "127.0.0.12", "127.0.0.13"};
static char dir[HARNESS_PATH_MAX], hosts[HARNESS_PATH_MAX + 16];
static char prog[HARNESS_PATH_MAX];
static char errmsg[TPDB_ERRMSG_SIZE];
static unsigned raftPort, clientPort;

/* Rewrites the hosts file in place (the bind mount holds its inode):
 * localhost plus NAME for the first n addresses. */
static void writeHosts(int n)
{
    char text[512] = "127.0.0.1 localhost\n";
    for (int i = 0; i < n; i++) {
        size_t used = strlen(text);
        snprintf(text + used, sizeof text - used, "%s %s\n", ips[i], NAME);
    }
    int fd = open(hosts, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(close(fd), 0);
}

/* The temporary hosts file over /etc/hosts in a mount namespace of this
 * process (and its children) alone: nothing done here is seen outside,
 * and it all goes when they exit. Returns 0, or -1 if not allowed. */
static int isolate(void)
{
    if (harnessTmpDir(dir, sizeof dir, errmsg) != TPDB_OK) {
        fprintf(stderr, "%s\n", errmsg);
        return -1;
    }
    snprintf(hosts, sizeof hosts, "%s/hosts", dir);
    int fd = open(hosts, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || close(fd) != 0 || unshare(CLONE_NEWNS) != 0 ||
        mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount(hosts, "/etc/hosts", NULL, MS_BIND, NULL) != 0) {
        fprintf(stderr,
                "cannot bind-mount a hosts file in a private mount "
                "namespace (%s): skipped\n",
                strerror(errno));
        harnessRmTree(dir, errmsg);
        return -1;
    }
    /* Names the hosts file lacks are not sent to the machine's real
     * nameserver (which may not answer for seconds, while a SIGTERM waits
     * for the lookup to end): nothing listens on 127.0.0.1:53, so they
     * fail at once. */
    char resolv[HARNESS_PATH_MAX + 16];
    snprintf(resolv, sizeof resolv, "%s/resolv.conf", dir);
    FILE *rf = fopen(resolv, "w");
    if (rf != NULL) {
        fputs("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n", rf);
        fclose(rf);
        if (mount(resolv, "/etc/resolv.conf", NULL, MS_BIND, NULL) != 0) {
            fprintf(stderr, "note: /etc/resolv.conf not replaced: %s\n",
                    strerror(errno));
        }
    }
    return 0;
}

static int setupGroup(void **state)
{
    unsigned ports[2];
    (void)state;
    snprintf(prog, sizeof prog, "%s/shell/tpdbd", getenv("TPDB_BUILD_ROOT"));
    writeHosts(0);
    assert_int_equal(harnessFreePorts(ports, 2, errmsg), TPDB_OK);
    raftPort = ports[0];
    clientPort = ports[1];
    return 0;
}

static int teardownGroup(void **state)
{
    (void)state;
    harnessCleanup();
    harnessRmTree(dir, errmsg);
    return 0;
}

/* Starts tpdbd for address i (no --node-id: DNS gives it) with extra
 * arguments (NULL-terminated list). */
static struct harness_proc *startNode(int i, const char *name, int readyMs)
{
    char raft[64], client[64], dataDir[HARNESS_PATH_MAX + 32], rport[16];
    char cport[16], ready[32];
    struct harness_proc *p = NULL;
    snprintf(raft, sizeof raft, "--raft=%s:%u", ips[i], raftPort);
    snprintf(client, sizeof client, "--client=%s:%u", ips[i], clientPort);
    snprintf(dataDir, sizeof dataDir, "--data-dir=%s/n%d", dir, i + 1);
    snprintf(rport, sizeof rport, "%u", raftPort);
    snprintf(cport, sizeof cport, "%u", clientPort);
    snprintf(ready, sizeof ready, "--ready-ms=%d", readyMs);
    const char *argv[] = {prog,   "--dns-peers",
                          name,   "--dns-raft-port",
                          rport,  "--dns-client-port",
                          cport,  "--dns-minimum-cluster-size",
                          "3",    raft,
                          client, dataDir,
                          ready,  "--election-ms=400",
                          NULL};
    assert_int_equal(harnessSpawn(argv, NULL, NULL, &p, errmsg), TPDB_OK);
    return p;
}

/* Waits for a stderr line of node i containing text; if also is not
 * NULL, that line must contain it too. */
static void expectLine2(struct harness_proc *p,
                        int i,
                        const char *text,
                        const char *also)
{
    char *line = NULL;
    if (harnessProcExpect(p, HARNESS_STDERR, harnessMatchContains, (void *)text,
                          EXPECT_MS, &line, errmsg) != TPDB_OK) {
        fail_msg("tpdbd %s never logged '%s': %s", ips[i], text, errmsg);
    }
    if (also != NULL && strstr(line, also) == NULL) {
        fail_msg("tpdbd %s: '%s' lacks '%s'", ips[i], line, also);
    }
    tpdb_free(line);
}

static void expectLine(struct harness_proc *p, int i, const char *text)
{
    expectLine2(p, i, text, NULL);
}

static json_t *call(int i, const char *line)
{
    return tpdbdsRequestAt(ips[i], clientPort, line);
}

/* Index of the leader once every node names the same one, else -1. */
static int agreedLeader(void)
{
    char want[64] = "";
    int leader = -1;
    for (int i = 0; i < N; i++) {
        json_t *o = call(i, "{\"action\":\"status\"}");
        const char *l = json_string_value(json_object_get(o, "leader_id"));
        const char *r = json_string_value(json_object_get(o, "role"));
        int ok = l != NULL && l[0] != '\0' &&
                 (want[0] == '\0' || strcmp(want, l) == 0);
        if (ok) {
            snprintf(want, sizeof want, "%s", l);
            if (strcmp(r, "Leader") == 0) {
                leader = i;
            }
        }
        json_decref(o);
        if (!ok) {
            return -1;
        }
    }
    return leader;
}

static int leaderFound(void *arg)
{
    int *leader = arg;
    *leader = agreedLeader();
    return *leader >= 0;
}

/* Every node's status: its node id is its IP, its members are the other
 * IPs, and the raft id each reports for itself is the one the others
 * list for it. */
static void checkIds(void)
{
    json_int_t self[N];
    json_t *st[N];
    for (int i = 0; i < N; i++) {
        st[i] = call(i, "{\"action\":\"status\"}");
        assert_non_null(st[i]);
        assert_string_equal(
            json_string_value(json_object_get(st[i], "node_id")), ips[i]);
        self[i] = json_integer_value(json_object_get(st[i], "raft_id"));
        assert_int_equal(json_object_size(json_object_get(st[i], "members")),
                         N - 1);
    }
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < N; k++) {
            if (k == i) {
                continue;
            }
            json_t *m =
                json_object_get(json_object_get(st[i], "members"), ips[k]);
            if (m == NULL) {
                fail_msg("%s does not list member %s", ips[i], ips[k]);
            }
            assert_int_equal(json_integer_value(json_object_get(m, "raft_id")),
                             self[k]);
        }
    }
    for (int i = 0; i < N; i++) {
        json_decref(st[i]);
    }
}

struct countPoll {
    long long want;
};

static int countsAre(void *arg)
{
    struct countPoll *p = arg;
    for (int i = 0; i < N; i++) {
        json_t *o = call(i,
                         "{\"action\":\"local_query\",\"sql\":\"SELECT "
                         "count(*) FROM t\"}");
        json_t *v =
            json_array_get(json_array_get(json_object_get(o, "rows"), 0), 0);
        int same = json_is_integer(v) && json_integer_value(v) == p->want;
        json_decref(o);
        if (!same) {
            return 0;
        }
    }
    return 1;
}

static void propose(int i, const char *sql)
{
    char line[256];
    snprintf(line, sizeof line, "{\"action\":\"propose\",\"sql\":\"%s\"}", sql);
    json_t *o = call(i, line);
    if (!json_is_true(json_object_get(o, "ok"))) {
        char *text = o != NULL ? json_dumps(o, 0) : NULL;
        fail_msg("propose on %s: %s", ips[i], text ? text : "no reply");
    }
    json_decref(o);
}

static void testBootstrapByDns(void **state)
{
    struct harness_proc *p[N];
    int leader = -1;
    (void)state;
    writeHosts(0);
    p[0] = startNode(0, NAME, WAIT_MS);
    /* Alone, it waits: first the name is unknown, then too short. */
    expectLine2(p[0], 0,
                "waiting for the cluster (--dns-peers " NAME
                ": cannot resolve: ",
                "); resolving again every 1000 ms");
    writeHosts(1);
    expectLine(p[0], 0,
               "--dns-minimum-cluster-size is 3 but resolved to only 1 "
               "address (127.0.0.11). Update the DNS record or lower "
               "--dns-minimum-cluster-size.); resolving again");
    writeHosts(N);
    expectLine(p[0], 0, "DNS " NAME " → ");
    expectLine(p[0], 0, "Own IP: 127.0.0.11");
    for (int i = 1; i < N; i++) {
        p[i] = startNode(i, NAME, WAIT_MS);
    }
    for (int i = 0; i < N; i++) {
        expectLine(p[i], i, " ready: node ");
    }
    if (harnessPollUntil(leaderFound, &leader, WAIT_MS, 50) != TPDB_OK) {
        fail_msg("no leader agreed on");
    }
    checkIds();
    /* A follower forwards to the leader's IP:--dns-client-port. */
    int follower = (leader + 1) % N;
    propose(follower, "CREATE TABLE t(x)");
    propose(follower, "INSERT INTO t VALUES(1)");
    struct countPoll want = {1};
    assert_int_equal(harnessPollUntil(countsAre, &want, WAIT_MS, 50), TPDB_OK);
    /* Restarted, the node keeps its IP id and raft id (node.conf). */
    int status = -1;
    assert_int_equal(harnessProcStop(p[0], WAIT_MS, &status, errmsg), TPDB_OK);
    harnessProcFree(p[0]);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    p[0] = startNode(0, NAME, WAIT_MS);
    expectLine(p[0], 0, " ready: node 127.0.0.11 ");
    if (harnessPollUntil(leaderFound, &leader, WAIT_MS, 50) != TPDB_OK) {
        fail_msg("no leader agreed on after the restart");
    }
    propose(0, "INSERT INTO t VALUES(2)");
    want.want = 2;
    assert_int_equal(harnessPollUntil(countsAre, &want, WAIT_MS, 50), TPDB_OK);
    checkIds();
    for (int i = 0; i < N; i++) {
        harnessProcFree(p[i]);
    }
}

/* Runs a node that must give up at its --ready-ms; returns its stderr's
 * last line (static storage). */
static const char *lastErrorLine(const char *name)
{
    static char last[1024];
    char *err = NULL;
    int status = -1;
    struct harness_proc *p = startNode(0, name, 1500);
    assert_int_equal(
        harnessProcReadAll(p, HARNESS_STDERR, EXPECT_MS, &err, errmsg),
        TPDB_OK);
    assert_int_equal(harnessProcWait(p, EXPECT_MS, &status, errmsg), TPDB_OK);
    harnessProcFree(p);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    size_t len = strlen(err);
    while (len > 0 && err[len - 1] == '\n') {
        err[--len] = '\0';
    }
    const char *nl = strrchr(err, '\n');
    snprintf(last, sizeof last, "%s", nl != NULL ? nl + 1 : err);
    tpdb_free(err);
    return last;
}

static void testGuardAtDeadline(void **state)
{
    (void)state;
    writeHosts(2);
    assert_string_equal(lastErrorLine(NAME),
                        "ERROR: --dns-minimum-cluster-size is 3 but resolved "
                        "to only 2 addresses (127.0.0.11, 127.0.0.12). Update "
                        "the DNS record or lower --dns-minimum-cluster-size.");
    /* SIGTERM while it waits: a clean stop. */
    struct harness_proc *p = startNode(0, "no-such-name.test", WAIT_MS);
    int status = -1;
    expectLine(p, 0, "waiting for the cluster (--dns-peers no-such-name.test");
    assert_int_equal(harnessProcStop(p, EXPECT_MS, &status, errmsg), TPDB_OK);
    harnessProcFree(p);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    const char *line = lastErrorLine("no-such-name.test");
    if (strncmp(line, "ERROR: --dns-peers no-such-name.test: cannot resolve: ",
                54) != 0) {
        fail_msg("unexpected last line: %s", line);
    }
}

int main(void)
{
    if (isolate() != 0) {
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(testGuardAtDeadline, harnessTeardown),
        cmocka_unit_test_teardown(testBootstrapByDns, harnessTeardown),
    };
    return cmocka_run_group_tests(tests, setupGroup, teardownGroup);
}
