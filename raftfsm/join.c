/*
 * Join protocol (see join.h): the member's side answers JOIN requests that
 * the transport hands over, using raft_add and raft_assign with callbacks;
 * the new node's side is a small state machine over one uv_tcp_t and one
 * uv_timer_t: WAIT (timer) -> IO (connect, send handshake, read reply) ->
 * WAIT again after a redirect or a retryable failure, until DONE.
 */
#include "raftfsm/join.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define REPLY_MAGIC 0x4a445054u /* "TPDJ" little-endian */
#define REPLY_VERSION 1
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

enum { STATE_IDLE = 0, STATE_WAIT, STATE_IO, STATE_DONE };

/* The outcome of an attempt besides the reply statuses. */
enum { RESULT_FAILED = -1, RESULT_TIMEOUT = -2 };

/* What the joining side reads: a plain reply, or the server's sealed hello
 * and then the reply as one sealed record. */
enum { PH_REPLY = 0, PH_SERVER, PH_RECORD_LEN, PH_RECORD };

size_t tpdbJoinReplyEncode(uint8_t *buf, int status, const char *text)
{
    size_t len = text != NULL ? strlen(text) : 0;
    if (len > TPDB_JOIN_TEXT_MAX) {
        len = TPDB_JOIN_TEXT_MAX;
    }
    tpdbPut32(buf, REPLY_MAGIC);
    tpdbPut16(buf + 4, REPLY_VERSION);
    tpdbPut16(buf + 6, (uint16_t)status);
    tpdbPut32(buf + 8, (uint32_t)len);
    tpdbPut32(buf + 12, 0);
    if (len > 0) {
        memcpy(buf + TPDB_JOIN_REPLY_HDR, text, len);
    }
    return TPDB_JOIN_REPLY_HDR + len;
}

int tpdbJoinReplyDecode(const uint8_t *hdr,
                        int *status,
                        size_t *text_len,
                        char *errmsg)
{
    unsigned s = tpdbGet16(hdr + 6);
    uint32_t len = tpdbGet32(hdr + 8);
    if (tpdbGet32(hdr) != REPLY_MAGIC || tpdbGet16(hdr + 4) != REPLY_VERSION) {
        tpdbErrf(errmsg, "join reply: bad magic or version");
        return TPDB_PROTO;
    }
    if (s > TPDB_JOIN_REFUSED || len > TPDB_JOIN_TEXT_MAX ||
        tpdbGet32(hdr + 12) != 0) {
        tpdbErrf(errmsg, "join reply: bad status %u or length %u", s,
                 (unsigned)len);
        return TPDB_PROTO;
    }
    *status = (int)s;
    *text_len = len;
    return TPDB_OK;
}

/* ---- The member's side ------------------------------------------------ */

/* A JOIN request that needs a membership change. */
struct joinServe {
    struct raft_change change;
    struct raft *raft;
    struct tpdb_join_req *req;
    uint64_t id;
    char address[TPDB_ADDRESS_MAX];
};

static void reply(struct tpdb_join_req *req,
                  uint64_t id,
                  int status,
                  const char *fmt,
                  ...) __attribute__((format(printf, 4, 5)));

static void reply(struct tpdb_join_req *req,
                  uint64_t id,
                  int status,
                  const char *fmt,
                  ...)
{
    uint8_t buf[TPDB_HANDSHAKE_MAX];
    char text[TPDB_JOIN_TEXT_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    tpdbLog(TPDB_LOG_INFO, "join: node %llu: answer %d: %s",
            (unsigned long long)id, status, text);
    tpdbTransportJoinReply(req, buf, tpdbJoinReplyEncode(buf, status, text));
}

static int statusOfRaft(int rv)
{
    switch (rv) {
        case RAFT_DUPLICATEID:
        case RAFT_DUPLICATEADDRESS:
        case RAFT_BADROLE:
            return TPDB_JOIN_REFUSED;
        default:
            return TPDB_JOIN_RETRY;
    }
}

static void serveFail(struct joinServe *js, int rv, const char *what)
{
    reply(js->req, js->id, statusOfRaft(rv), "%s: %s", what, raft_strerror(rv));
    tpdb_free(js);
}

static void assignCb(struct raft_change *change, int status)
{
    struct joinServe *js = change->data;
    if (status != 0) {
        serveFail(js, status, "assign voter");
        return;
    }
    reply(js->req, js->id, TPDB_JOIN_OK, "added node %llu at %s as a voter",
          (unsigned long long)js->id, js->address);
    tpdb_free(js);
}

static void addCb(struct raft_change *change, int status)
{
    struct joinServe *js = change->data;
    int rv = status;
    if (rv == 0) {
        rv = raft_assign(js->raft, &js->change, js->id, RAFT_VOTER, assignCb);
    }
    if (rv != 0) {
        serveFail(js, rv, status != 0 ? "add" : "assign voter");
    }
}

static const struct raft_server *findServer(const struct raft *r, uint64_t id)
{
    for (unsigned i = 0; i < r->configuration.n; i++) {
        if (r->configuration.servers[i].id == id) {
            return &r->configuration.servers[i];
        }
    }
    return NULL;
}

void tpdbJoinServe(void *arg,
                   struct tpdb_join_req *req,
                   uint64_t id,
                   const char *address)
{
    struct raft *r = arg;
    const struct raft_server *s;
    struct joinServe *js;
    raft_id leader = 0;
    const char *leaderAddress = NULL;
    int rv;
    if (raft_state(r) != RAFT_LEADER) {
        raft_leader(r, &leader, &leaderAddress);
        if (leader != 0 && leaderAddress != NULL) {
            reply(req, id, TPDB_JOIN_REDIRECT, "%s", leaderAddress);
        } else {
            reply(req, id, TPDB_JOIN_RETRY, "no leader known");
        }
        return;
    }
    s = findServer(r, id);
    if (s != NULL && strcmp(s->address, address) != 0) {
        reply(req, id, TPDB_JOIN_REFUSED, "node %llu is a member at %s, not %s",
              (unsigned long long)id, s->address, address);
        return;
    }
    if (s != NULL && s->role == RAFT_VOTER) {
        reply(req, id, TPDB_JOIN_OK, "already a member");
        return;
    }
    js = tpdb_calloc(1, sizeof *js);
    if (js == NULL) {
        reply(req, id, TPDB_JOIN_RETRY, "out of memory");
        return;
    }
    js->change.data = js;
    js->raft = r;
    js->req = req;
    js->id = id;
    snprintf(js->address, sizeof js->address, "%s", address);
    if (s != NULL) {
        rv = raft_assign(r, &js->change, id, RAFT_VOTER, assignCb);
    } else {
        rv = raft_add(r, &js->change, id, js->address, addCb);
    }
    if (rv != 0) {
        serveFail(js, rv, s != NULL ? "assign voter" : "add");
    }
}

/* ---- The joining side ------------------------------------------------- */

static void attempt(struct tpdb_join_client *c);
static void timerCb(uv_timer_t *timer);

static void finish(struct tpdb_join_client *c, int rc, const char *msg)
{
    c->state = STATE_DONE;
    uv_timer_stop(&c->timer);
    tpdbLog(rc == TPDB_OK ? TPDB_LOG_INFO : TPDB_LOG_WARN,
            "join: node %llu: %s", (unsigned long long)c->id, msg);
    c->cb(c->arg, rc, msg);
}

static unsigned remainingMs(const struct tpdb_join_client *c)
{
    uint64_t now = tpdbNowMs();
    return now >= c->deadline ? 0 : (unsigned)(c->deadline - now);
}

/* Waits before the next attempt, or gives up at the deadline. */
static void waitThenAttempt(struct tpdb_join_client *c, unsigned ms)
{
    unsigned left = remainingMs(c);
    if (left == 0) {
        char msg[TPDB_ERRMSG_SIZE];
        snprintf(msg, sizeof msg, "not added in time: %.200s",
                 c->msg[0] ? c->msg : "no answer");
        finish(c, TPDB_TIMEOUT, msg);
        return;
    }
    c->state = STATE_WAIT;
    uv_timer_start(&c->timer, timerCb, ms < left ? ms : left, 0);
}

static unsigned nextBackoff(struct tpdb_join_client *c)
{
    unsigned ms = c->backoff_ms;
    c->backoff_ms = ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2;
    return ms;
}

static void tcpClosedCb(uv_handle_t *handle)
{
    struct tpdb_join_client *c = handle->data;
    c->tcp_open = 0;
    if (c->state == STATE_DONE) {
        return;
    }
    uv_timer_stop(&c->timer);
    switch (c->result) {
        case TPDB_JOIN_OK:
            finish(c, TPDB_OK, c->msg);
            return;
        case TPDB_JOIN_REFUSED:
            finish(c, TPDB_INVALID, c->msg);
            return;
        case TPDB_JOIN_REDIRECT:
            snprintf(c->target, sizeof c->target, "%.255s", c->msg);
            c->redirects++;
            waitThenAttempt(c, c->redirects <= 3 ? 0 : nextBackoff(c));
            return;
        case RESULT_TIMEOUT:
            waitThenAttempt(c, 0);
            return;
        default:
            /* The leader may have moved: start over at the origin. */
            tpdbLog(TPDB_LOG_DEBUG, "join: %s: %s", c->target, c->msg);
            snprintf(c->target, sizeof c->target, "%s", c->origin);
            c->redirects = 0;
            waitThenAttempt(c, nextBackoff(c));
            return;
    }
}

static void closeTcp(struct tpdb_join_client *c)
{
    if (c->tcp_open && !uv_is_closing((uv_handle_t *)&c->tcp)) {
        uv_close((uv_handle_t *)&c->tcp, tcpClosedCb);
    }
}

static void timerCb(uv_timer_t *timer)
{
    struct tpdb_join_client *c = timer->data;
    if (c->state == STATE_WAIT) {
        attempt(c);
    } else if (c->state == STATE_IO) {
        c->result = RESULT_TIMEOUT;
        closeTcp(c);
    }
}

static void allocCb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct tpdb_join_client *c = handle->data;
    (void)suggested;
    buf->base = (char *)c->buf + c->have;
    buf->len = c->want - c->have;
}

/* A whole reply (len bytes at p) has arrived. */
static void replyIn(struct tpdb_join_client *c, const uint8_t *p, size_t len)
{
    int status;
    size_t text;
    if (tpdbJoinReplyDecode(p, &status, &text, c->msg) != TPDB_OK ||
        TPDB_JOIN_REPLY_HDR + text != len) {
        if (TPDB_JOIN_REPLY_HDR + text != len) {
            snprintf(c->msg, sizeof c->msg, "bad reply length");
        }
        tpdbErrWrap(c->msg, "%s", c->target);
        closeTcp(c);
        return;
    }
    memcpy(c->msg, p + TPDB_JOIN_REPLY_HDR, text);
    c->msg[text] = '\0';
    c->result = status;
    uv_read_stop((uv_stream_t *)&c->tcp);
    closeTcp(c);
}

/* A plain reply: its header, then its text. */
static void plainIn(struct tpdb_join_client *c)
{
    int status;
    size_t len;
    if (tpdbJoinReplyDecode(c->buf, &status, &len, c->msg) != TPDB_OK) {
        tpdbErrWrap(c->msg, "%s", c->target);
        closeTcp(c);
        return;
    }
    if (c->want == TPDB_JOIN_REPLY_HDR && len > 0) {
        c->want += len;
        return;
    }
    replyIn(c, c->buf, c->have);
}

static void finWrittenCb(uv_write_t *w, int status)
{
    struct tpdb_join_client *c = w->data;
    if (status != 0 && status != UV_ECANCELED) {
        snprintf(c->msg, sizeof c->msg, "send to %s failed", c->target);
        closeTcp(c);
    }
}

/* The member's sealed hello: prove we hold the key, then read the reply. */
static void serverIn(struct tpdb_join_client *c)
{
    uv_buf_t b = uv_buf_init((char *)c->fin, sizeof c->fin);
    if (tpdbSealClientFinish(&c->hs, c->buf, 0, c->fin, &c->session, c->msg) !=
        TPDB_OK) {
        tpdbErrWrap(c->msg, "%s", c->target);
        closeTcp(c);
        return;
    }
    c->phase = PH_RECORD_LEN;
    c->have = 0;
    c->want = TPDB_SEAL_LEN;
    if (uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, finWrittenCb) != 0) {
        snprintf(c->msg, sizeof c->msg, "send to %s failed", c->target);
        closeTcp(c);
    }
}

/* The sealed reply record: its length, then the rest. */
static void recordIn(struct tpdb_join_client *c)
{
    size_t len;
    if (c->phase == PH_RECORD_LEN) {
        if (tpdbSealRecordLen(c->buf, &len, c->msg) != TPDB_OK ||
            len > TPDB_HANDSHAKE_MAX) {
            tpdbErrWrap(c->msg, "%s", c->target);
            closeTcp(c);
            return;
        }
        c->phase = PH_RECORD;
        c->want += len + TPDB_SEAL_TAG;
        return;
    }
    len = c->want - TPDB_SEAL_OVERHEAD;
    if (tpdbSealOpen(&c->session, c->buf, len, c->msg) != TPDB_OK) {
        tpdbErrWrap(c->msg, "%s", c->target);
        closeTcp(c);
        return;
    }
    replyIn(c, c->buf + TPDB_SEAL_LEN, len);
}

static void readCb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct tpdb_join_client *c = stream->data;
    (void)buf;
    if (nread < 0) {
        snprintf(
            c->msg, sizeof c->msg, "%s closed the connection: %s%s", c->target,
            uv_strerror((int)nread),
            c->phase == PH_SERVER ? " (does it hold our cluster key?)" : "");
        closeTcp(c);
        return;
    }
    c->have += (size_t)nread;
    if (c->have < c->want) {
        return;
    }
    switch (c->phase) {
        case PH_SERVER:
            serverIn(c);
            return;
        case PH_RECORD_LEN:
        case PH_RECORD:
            recordIn(c);
            return;
        default:
            plainIn(c);
            return;
    }
}

static void writeCb(uv_write_t *w, int status)
{
    struct tpdb_join_client *c = w->data;
    if (status == UV_ECANCELED) {
        return;
    }
    c->have = 0;
    c->phase = c->sealed ? PH_SERVER : PH_REPLY;
    c->want = c->sealed ? TPDB_SEAL_SERVER : TPDB_JOIN_REPLY_HDR;
    if (status != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, allocCb, readCb) != 0) {
        snprintf(c->msg, sizeof c->msg, "send to %s failed", c->target);
        closeTcp(c);
    }
}

static void connectCb(uv_connect_t *req, int status)
{
    struct tpdb_join_client *c = req->data;
    size_t len;
    uv_buf_t b;
    if (status == UV_ECANCELED) {
        return; /* closed by us; keep the last reason */
    }
    if (status != 0) {
        snprintf(c->msg, sizeof c->msg, "connect to %s: %s", c->target,
                 uv_strerror(status));
        closeTcp(c);
        return;
    }
    len = tpdbHandshakeEncode(c->buf, TPDB_HANDSHAKE_JOIN, c->id, c->address);
    c->sealed = c->keys != NULL && c->keys->n > 0;
    if (c->sealed) {
        tpdbHandshakeSetSealed(c->buf);
        tpdbSealClientHello(&c->hs, c->keys, c->buf, len, c->buf + len);
        len += TPDB_SEAL_HELLO;
    }
    b = uv_buf_init((char *)c->buf, (unsigned)len);
    c->write.data = c;
    if (uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, writeCb) != 0) {
        snprintf(c->msg, sizeof c->msg, "send to %s failed", c->target);
        closeTcp(c);
    }
}

static void attempt(struct tpdb_join_client *c)
{
    struct sockaddr_in sa;
    if (tpdbTransportParseAddress(c->target, &sa) != TPDB_OK) {
        char msg[TPDB_ERRMSG_SIZE];
        snprintf(msg, sizeof msg, "join: bad member address '%s'", c->target);
        finish(c, TPDB_INVALID, msg);
        return;
    }
    c->state = STATE_IO;
    c->result = RESULT_FAILED;
    uv_tcp_init(c->loop, &c->tcp);
    c->tcp.data = c;
    c->tcp_open = 1;
    c->connect.data = c;
    /* The leader answers only once the node caught up and is a voter:
     * wait for the reply until the deadline. */
    uv_timer_start(&c->timer, timerCb, remainingMs(c), 0);
    if (uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&sa,
                       connectCb) != 0) {
        snprintf(c->msg, sizeof c->msg, "connect to %s failed", c->target);
        closeTcp(c);
    }
}

int tpdbJoinClientStart(struct tpdb_join_client *c,
                        uv_loop_t *loop,
                        uint64_t id,
                        const char *address,
                        const char *target,
                        const struct tpdb_seal_keys *keys,
                        unsigned timeout_ms,
                        tpdb_join_done_cb cb,
                        void *arg,
                        char *errmsg)
{
    struct sockaddr_in sa;
    if (c->state == STATE_WAIT || c->state == STATE_IO || c->tcp_open) {
        tpdbErrf(errmsg, "join: already in progress");
        return TPDB_BUSY;
    }
    if (target == NULL || strlen(target) >= sizeof c->origin ||
        strlen(address) >= sizeof c->address ||
        tpdbTransportParseAddress(target, &sa) != TPDB_OK) {
        tpdbErrf(errmsg, "join: bad member address '%s' (want IPv4:port)",
                 target != NULL ? target : "");
        return TPDB_INVALID;
    }
    if (strcmp(target, address) == 0) {
        tpdbErrf(errmsg, "join: %s is this node's own address", target);
        return TPDB_INVALID;
    }
    c->loop = loop;
    c->id = id;
    c->keys = keys;
    snprintf(c->address, sizeof c->address, "%s", address);
    snprintf(c->origin, sizeof c->origin, "%s", target);
    snprintf(c->target, sizeof c->target, "%s", target);
    c->deadline = tpdbNowMs() + timeout_ms;
    c->backoff_ms = BACKOFF_MIN_MS;
    c->redirects = 0;
    c->msg[0] = '\0';
    c->cb = cb;
    c->arg = arg;
    if (!c->timer_open) {
        uv_timer_init(loop, &c->timer);
        c->timer.data = c;
        c->timer_open = 1;
    }
    c->state = STATE_WAIT;
    uv_timer_start(&c->timer, timerCb, 0, 0);
    return TPDB_OK;
}

void tpdbJoinClientClose(struct tpdb_join_client *c)
{
    c->state = STATE_DONE;
    closeTcp(c);
    if (c->timer_open && !uv_is_closing((uv_handle_t *)&c->timer)) {
        uv_close((uv_handle_t *)&c->timer, NULL);
    }
}
