/*
 * tpdbNodeRecover (see recover.h): opens the node's raft directory with
 * raft_uv over a loop and a transport that never listen, and calls
 * raft_recover. No FSM runs: raft_recover only loads the log and appends
 * to it.
 */
#include "raftfsm/recover.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "raftfsm/nodeconf.h"
#include "raftfsm/transport.h"

/* What raft_recover needs open; freed by recoverClose. */
struct recovery {
    uv_loop_t loop;
    struct tpdb_transport transport;
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;
    uint64_t id;
    char address[TPDB_ADDRESS_MAX];
    char raft_dir[PATH_MAX + 16];
};

static int noApply(struct raft_fsm *fsm,
                   const struct raft_buffer *buf,
                   void **result)
{
    (void)fsm;
    (void)buf;
    (void)result;
    return RAFT_NOTFOUND;
}

static int noSnapshot(struct raft_fsm *fsm,
                      struct raft_buffer *bufs[],
                      unsigned *n_bufs)
{
    (void)fsm;
    (void)bufs;
    (void)n_bufs;
    return RAFT_NOTFOUND;
}

static int noRestore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    (void)fsm;
    (void)buf;
    return RAFT_NOTFOUND;
}

/* Parses members into conf (initialised; the caller closes it) and checks
 * that this node is one of them, at its own address. */
static int membersCheck(const struct recovery *rc,
                        const char *members,
                        struct raft_configuration *conf,
                        char *errmsg)
{
    int found = 0;
    int rv = tpdbPeersParse(members, conf, errmsg);
    if (rv != TPDB_OK) {
        return rv;
    }
    for (unsigned i = 0; i < conf->n; i++) {
        found |= conf->servers[i].id == rc->id &&
                 strcmp(conf->servers[i].address, rc->address) == 0;
    }
    if (!found) {
        tpdbErrf(errmsg, "recover: this node (%llu@%s) is not among %s",
                 (unsigned long long)rc->id, rc->address, members);
        return TPDB_INVALID;
    }
    return TPDB_OK;
}

static void raftClosedCb(struct raft *r)
{
    (void)r;
}

/* Opens raft over the node's directory and recovers it to conf. */
static int recoverRaft(struct recovery *rc,
                       const struct raft_configuration *conf,
                       char *errmsg)
{
    int rv;
    int out = TPDB_OK;
    if (uv_loop_init(&rc->loop) != 0) {
        tpdbErrf(errmsg, "recover: uv_loop_init failed");
        return TPDB_NOMEM;
    }
    out = tpdbTransportInit(&rc->transport, &rc->loop, errmsg);
    if (out != TPDB_OK) {
        goto err_after_loop;
    }
    rv = raft_uv_init(&rc->io, &rc->loop, rc->raft_dir, &rc->transport.base);
    if (rv != 0) {
        tpdbErrf(errmsg, "recover: raft_uv_init %s: %s", rc->raft_dir,
                 raft_strerror(rv));
        out = TPDB_RAFT;
        goto err_after_transport;
    }
    rc->fsm.version = 1;
    rc->fsm.apply = noApply;
    rc->fsm.snapshot = noSnapshot;
    rc->fsm.restore = noRestore;
    rv = raft_init(&rc->raft, &rc->io, &rc->fsm, rc->id, rc->address);
    if (rv == 0) {
        rv = raft_recover(&rc->raft, conf);
        if (rv != 0) {
            tpdbErrf(errmsg, "recover: raft_recover: %s",
                     raft_errmsg(&rc->raft));
            out = TPDB_RAFT;
        }
        raft_close(&rc->raft, raftClosedCb);
    } else {
        tpdbErrf(errmsg, "recover: raft_init: %s", raft_strerror(rv));
        out = TPDB_RAFT;
        raft_uv_close(&rc->io);
    }
    /* raft_close closes the io too; let the loop finish both. */
    uv_run(&rc->loop, UV_RUN_DEFAULT);
err_after_transport:
    tpdbTransportClose(&rc->transport);
    uv_run(&rc->loop, UV_RUN_DEFAULT);
err_after_loop:
    uv_loop_close(&rc->loop);
    return out;
}

int tpdbNodeRecover(const char *data_dir, const char *members, char *errmsg)
{
    struct recovery *rc = tpdb_calloc(1, sizeof *rc);
    struct raft_configuration conf;
    char real[PATH_MAX];
    char meta[PATH_MAX + 8];
    int lock = -1;
    int out;
    if (rc == NULL) {
        tpdbErrf(errmsg, "recover: out of memory");
        return TPDB_NOMEM;
    }
    if (realpath(data_dir, real) == NULL) {
        tpdbErrf(errmsg, "recover: no directory %s", data_dir);
        tpdb_free(rc);
        return TPDB_NOTFOUND;
    }
    snprintf(meta, sizeof meta, "%s/.tpdb", real);
    snprintf(rc->raft_dir, sizeof rc->raft_dir, "%s/raft", meta);
    out = tpdbNodeConfLoad(meta, &rc->id, rc->address, sizeof rc->address,
                           errmsg);
    if (out == TPDB_OK) {
        out = tpdbNodeLock(meta, &lock, errmsg);
    }
    if (out == TPDB_OK) {
        raft_configuration_init(&conf);
        out = membersCheck(rc, members, &conf, errmsg);
        if (out == TPDB_OK) {
            out = recoverRaft(rc, &conf, errmsg);
        }
        raft_configuration_close(&conf);
    }
    if (lock >= 0) {
        close(lock);
    }
    tpdb_free(rc);
    return out;
}
