/*
 * Replication of native TPDB page files (tpdbfile.h, "Replication"): the
 * leader's commit is handed to hooks in the page mapping of
 * TPDB_ENTRY_TPDBFILE (txn page 1 = header page, txn page N+1 = TPDB page
 * N) before any frame is written; a follower applies such a commit through
 * the same frames + sentinel + fdatasync + checkpoint protocol the writer
 * uses (tfCommitWrite), so that crash recovery and readers need nothing new.
 * Snapshots and catch-up streams read the committed state, WAL included,
 * in the same mapping.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vfs/tpdbfile/tpdbfile_int.h"

static const char replMagic[8] = {'T', 'P', 'A', 'N', 'D', 'A', 'D', 'B'};

int tpdb_file_set_hooks(struct tpdb_file *f,
                        const struct tpdb_file_hooks *hooks)
{
    if (f->rdonly) {
        tpdbErrf(f->errmsg, "%s: opened read-only", f->name);
        return TPDB_READONLY;
    }
    if (f->in_txn || f->in_stmt) {
        tpdbErrf(f->errmsg, "%s: hooks changed inside a transaction", f->name);
        return TPDB_MISUSE;
    }
    if (hooks != NULL && (hooks->version < 1 || hooks->version > 3)) {
        tpdbErrf(f->errmsg, "%s: unknown hooks version %d", f->name,
                 hooks->version);
        return TPDB_INVALID;
    }
    memset(&f->hooks, 0, sizeof f->hooks);
    if (hooks != NULL) {
        f->hooks = *hooks;
        if (hooks->version < 2) {
            f->hooks.commit_part = NULL;
        }
        if (hooks->version < 3) {
            f->hooks.commit_delta_part = NULL;
        }
    }
    f->repl_full = hooks != NULL &&
                   (hooks->needs_full == NULL || hooks->needs_full(hooks->arg));
    return TPDB_OK;
}

int tfReplWriteCheck(struct tpdb_file *f)
{
    char msg[TPDB_ERRMSG_SIZE] = "";
    if (f->repl_stale) {
        tpdbErrf(f->errmsg,
                 "%s: a replicated commit could not be written locally; "
                 "this copy is behind the cluster (restart the node)",
                 f->name);
        return TPDB_IOERR;
    }
    if (f->hooks.version == 0 || f->hooks.write_check == NULL) {
        return TPDB_OK;
    }
    int rc = f->hooks.write_check(f->hooks.arg, msg);
    if (rc != TPDB_OK) {
        tpdbErrf(f->errmsg, "%s: %s", f->name, msg[0] ? msg : "write refused");
    }
    return rc;
}

static int pgnoCmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a;
    uint32_t y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Fills txn->pages[1..] with the changed pages (or every page when
 * f->repl_full) in page order; *buf gets a buffer the caller frees that
 * holds page images read from the file (full mode only). */
static int replCollect(struct tpdb_file *f, struct tpdb_txn *txn, uint8_t **buf)
{
    uint32_t n = f->repl_full ? f->page_count : (uint32_t)f->dirty.n;
    uint32_t *pgnos = tpdb_malloc(sizeof *pgnos * (n + 1));
    int rc = TPDB_OK;
    if (pgnos == NULL) {
        return TPDB_NOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        pgnos[i] = f->repl_full ? i + 1 : f->dirty.order[i];
    }
    qsort(pgnos, n, sizeof *pgnos, pgnoCmp);
    if (f->repl_full && n > 0) {
        *buf = tpdb_malloc((size_t)n * TF_PAGE);
        rc = *buf == NULL ? TPDB_NOMEM : TPDB_OK;
    }
    for (uint32_t i = 0; i < n && rc == TPDB_OK; i++) {
        struct tpdb_page *pg = &txn->pages[i + 1];
        pg->pgno = pgnos[i] + 1;
        pg->data = tfMapGet(&f->dirty, pgnos[i]);
        if (f->repl_full) {
            rc = tfPageRead(f, pgnos[i], *buf + (size_t)i * TF_PAGE);
            pg->data = *buf + (size_t)i * TF_PAGE;
        }
    }
    txn->n_pages = n + 1;
    tpdb_free(pgnos);
    return rc;
}

/* Hands a whole-file commit (header page hdr, then every page) to
 * hooks->commit_part in parts of TPDB_FILE_REPL_PART_PAGES mapped pages,
 * each read into one buffer. */
static int replCommitParts(struct tpdb_file *f, const uint8_t *hdr, char *msg)
{
    const uint32_t per = TPDB_FILE_REPL_PART_PAGES;
    uint32_t total = f->page_count + 1; /* mapped pages */
    struct tpdb_page *pages = tpdb_malloc(per * sizeof *pages);
    uint8_t *buf = tpdb_malloc((size_t)per * TF_PAGE);
    int rc = pages != NULL && buf != NULL ? TPDB_OK : TPDB_NOMEM;
    if (rc != TPDB_OK) {
        tpdbErrf(msg, "out of memory");
    }
    unsigned index = 0;
    for (uint32_t first = 1; rc == TPDB_OK && first <= total;
         first += per, index++) {
        uint32_t n = total - first + 1 < per ? total - first + 1 : per;
        for (uint32_t i = 0; i < n && rc == TPDB_OK; i++) {
            uint32_t mapped = first + i;
            pages[i].pgno = mapped;
            pages[i].data = mapped == 1 ? hdr : buf + (size_t)i * TF_PAGE;
            if (mapped > 1) {
                rc = tfPageRead(f, mapped - 1, buf + (size_t)i * TF_PAGE);
            }
        }
        if (rc != TPDB_OK) {
            tpdbErrf(msg, "read page: %s", f->errmsg);
            break;
        }
        struct tpdb_txn part = {TF_PAGE, total, n, pages};
        rc = f->hooks.commit_part(f->hooks.arg, &part, index, first + n > total,
                                  msg);
    }
    tpdb_free(buf);
    tpdb_free(pages);
    return rc;
}

/* Hands a commit of changes (header page hdr, then the changed pages in
 * page order) to hooks->commit_delta_part in parts of
 * TPDB_FILE_REPL_PART_PAGES mapped pages, pointing into the dirty set. */
static int replCommitDeltaParts(struct tpdb_file *f,
                                const uint8_t *hdr,
                                char *msg)
{
    const uint32_t per = TPDB_FILE_REPL_PART_PAGES;
    uint32_t n = (uint32_t)f->dirty.n;
    uint32_t *pgnos = tpdb_malloc(sizeof *pgnos * (n + 1));
    struct tpdb_page *pages = tpdb_malloc(per * sizeof *pages);
    int rc = pgnos != NULL && pages != NULL ? TPDB_OK : TPDB_NOMEM;
    if (rc != TPDB_OK) {
        tpdbErrf(msg, "out of memory");
        goto out;
    }
    memcpy(pgnos, f->dirty.order, sizeof *pgnos * n);
    qsort(pgnos, n, sizeof *pgnos, pgnoCmp);
    uint32_t total = n + 1; /* mapped pages: the header, then each page */
    unsigned index = 0;
    for (uint32_t first = 0; rc == TPDB_OK && first < total;
         first += per, index++) {
        uint32_t cnt = total - first < per ? total - first : per;
        for (uint32_t i = 0; i < cnt; i++) {
            uint32_t k = first + i; /* 0: the header page */
            pages[i].pgno = k == 0 ? 1 : pgnos[k - 1] + 1;
            pages[i].data = k == 0 ? hdr : tfMapGet(&f->dirty, pgnos[k - 1]);
        }
        struct tpdb_txn part = {TF_PAGE, f->page_count + 1, cnt, pages};
        rc = f->hooks.commit_delta_part(f->hooks.arg, &part, index,
                                        first + cnt >= total, msg);
    }
out:
    tpdb_free(pages);
    tpdb_free(pgnos);
    return rc;
}

/* Whether the commit goes to the hooks in parts: a whole file, or
 * changes, of more than TPDB_FILE_REPL_PART_PAGES mapped pages, when the
 * hooks take parts of that kind. */
static int replInParts(const struct tpdb_file *f)
{
    if (f->page_count == UINT32_MAX) {
        return 0;
    }
    if (f->repl_full) {
        return f->hooks.commit_part != NULL &&
               f->page_count + 1 > TPDB_FILE_REPL_PART_PAGES;
    }
    return f->hooks.commit_delta_part != NULL &&
           f->dirty.n + 1 > TPDB_FILE_REPL_PART_PAGES;
}

int tfReplCommit(struct tpdb_file *f, int *replicated)
{
    uint8_t hdr[TF_PAGE];
    uint8_t *buf = NULL;
    char msg[TPDB_ERRMSG_SIZE] = "";
    struct tpdb_txn txn;
    *replicated = 0;
    if (f->hooks.version == 0 || f->hooks.commit == NULL ||
        (!f->repl_full && f->dirty.n == 0 && f->page_count == f->c_page_count &&
         f->free_head == f->c_free_head)) {
        return TPDB_OK;
    }
    memset(&txn, 0, sizeof txn);
    if (replInParts(f)) {
        memset(hdr, 0, sizeof hdr);
        tfHeaderEncode(f, hdr);
        int rc = f->repl_full ? replCommitParts(f, hdr, msg)
                              : replCommitDeltaParts(f, hdr, msg);
        if (rc != TPDB_OK) {
            tpdbErrf(f->errmsg, "%s: replicate commit: %s", f->name,
                     msg[0] ? msg : tpdb_strerror(rc));
            return rc;
        }
        *replicated = 1;
        f->repl_full = 0;
        return TPDB_OK;
    }
    size_t max = (f->repl_full ? f->page_count : f->dirty.n) + 1;
    txn.page_size = TF_PAGE;
    txn.db_pages = f->page_count + 1;
    txn.pages = tpdb_calloc(max, sizeof *txn.pages);
    if (txn.pages == NULL || f->page_count == UINT32_MAX) {
        tpdb_free(txn.pages);
        tpdbErrf(f->errmsg, "%s: replicate commit: out of memory", f->name);
        return TPDB_NOMEM;
    }
    memset(hdr, 0, sizeof hdr);
    tfHeaderEncode(f, hdr);
    txn.pages[0].pgno = 1;
    txn.pages[0].data = hdr;
    int rc = replCollect(f, &txn, &buf);
    if (rc != TPDB_OK) {
        tpdbErrWrap(f->errmsg, "replicate commit");
        goto out;
    }
    rc = f->hooks.commit(f->hooks.arg, &txn, msg);
    if (rc != TPDB_OK) {
        tpdbErrf(f->errmsg, "%s: replicate commit: %s", f->name,
                 msg[0] ? msg : tpdb_strerror(rc));
        goto out;
    }
    *replicated = 1;
    f->repl_full = 0;
out:
    tpdb_free(buf);
    tpdb_free(txn.pages);
    return rc;
}

void tfReplDone(struct tpdb_file *f, int durable)
{
    if (!durable) {
        f->repl_stale = 1;
    }
    if (f->hooks.done != NULL) {
        f->hooks.done(f->hooks.arg, durable);
    }
}

/* ---- Follower apply ------------------------------------------------------ */

int tfReplCheckTxn(const struct tpdb_txn *txn, int header, char *errmsg)
{
    if (txn == NULL || txn->pages == NULL || txn->n_pages == 0 ||
        txn->page_size != TF_PAGE ||
        (header && (txn->pages[0].pgno != 1 || txn->pages[0].data == NULL))) {
        tpdbErrf(errmsg, "not a TPDB file commit (page size, header page)");
        return TPDB_INVALID;
    }
    const uint8_t *h = txn->pages[0].data;
    uint32_t page_count = tpdbGet32(h + 12);
    if (header &&
        (memcmp(h, replMagic, 8) != 0 || tpdbGet32(h + 8) == 1 ||
         page_count == UINT32_MAX || txn->db_pages != page_count + 1 ||
         tpdbGet32(h + 16) > page_count)) {
        tpdbErrf(errmsg, "TPDB file commit: bad header page");
        return TPDB_INVALID;
    }
    for (uint32_t i = header ? 1 : 0; i < txn->n_pages; i++) {
        const struct tpdb_page *pg = &txn->pages[i];
        uint32_t prev = i > 0 ? txn->pages[i - 1].pgno : 1;
        if (pg->pgno <= prev || pg->pgno > txn->db_pages || pg->data == NULL) {
            tpdbErrf(errmsg, "TPDB file commit: bad page %u", pg->pgno);
            return TPDB_INVALID;
        }
    }
    return TPDB_OK;
}

int tfTruncateToCount(struct tpdb_file *f)
{
    struct stat st;
    uint64_t want = TF_HDR + (uint64_t)f->page_count * TF_PAGE;
    if (fstat(f->fd, &st) != 0) {
        tpdbErrf(f->errmsg, "%s: stat failed: %s", f->name, strerror(errno));
        return TPDB_IOERR;
    }
    if ((uint64_t)st.st_size <= want) {
        return TPDB_OK;
    }
    if (ftruncate(f->fd, (off_t)want) != 0 || fsync(f->fd) != 0) {
        tpdbErrf(f->errmsg, "%s: truncate failed: %s", f->name,
                 strerror(errno));
        return TPDB_IOERR;
    }
    return TPDB_OK;
}

int tpdb_file_apply(const char *path, const struct tpdb_txn *txn, char *errmsg)
{
    struct tpdb_file *f = NULL;
    int durable = 0;
    if (path == NULL) {
        tpdbErrf(errmsg, "tpdb_file_apply: NULL path");
        return TPDB_INVALID;
    }
    int rc = tfReplCheckTxn(txn, 1, errmsg);
    if (rc != TPDB_OK) {
        tpdbErrWrap(errmsg, "apply to %s", path);
        return rc;
    }
    rc = tfOpen(path, TPDB_FILE_CREATE | TF_OPEN_NOCATALOG, &f, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    const uint8_t *h = txn->pages[0].data;
    f->info.version = tpdbGet32(h + 8);
    f->page_count = tpdbGet32(h + 12);
    f->free_head = tpdbGet32(h + 16);
    for (uint32_t i = 1; i < txn->n_pages && rc == TPDB_OK; i++) {
        rc = tfMapPut(&f->dirty, txn->pages[i].pgno - 1, txn->pages[i].data);
    }
    if (rc != TPDB_OK) {
        tpdbErrf(f->errmsg, "%s: apply: out of memory", f->name);
    } else {
        rc = tfCommitWrite(f, &durable);
    }
    if (rc == TPDB_OK) {
        rc = tfTruncateToCount(f);
    }
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "%s", f->errmsg);
    }
    tpdb_file_close(f);
    return rc;
}

/* ---- Snapshot image and page reads in the mapping ----------------------- */

uint32_t tpdb_file_mapped_pages(const struct tpdb_file *f)
{
    return f->page_count + 1;
}

int tpdb_file_read_mapped(struct tpdb_file *f,
                          uint32_t first,
                          uint32_t n,
                          uint8_t *buf)
{
    if (first == 0 || n > f->page_count + 1 ||
        first - 1 > f->page_count + 1 - n) {
        tpdbErrf(f->errmsg, "%s: mapped pages %u..+%u out of range (%u)",
                 f->name, first, n, f->page_count + 1);
        return TPDB_INVALID;
    }
    int rc = TPDB_OK;
    for (uint32_t i = 0; i < n && rc == TPDB_OK; i++) {
        uint8_t *out = buf + (size_t)i * TF_PAGE;
        if (first + i == 1) {
            memset(out, 0, TF_PAGE);
            tfHeaderEncode(f, out);
        } else {
            rc = tfPageRead(f, first + i - 1, out);
        }
    }
    return rc;
}

int tpdb_file_image(const char *path,
                    uint8_t **image,
                    uint32_t *n_pages,
                    char *errmsg)
{
    struct tpdb_file *f = NULL;
    uint8_t *img = NULL;
    *image = NULL;
    *n_pages = 0;
    int rc = tfOpen(path, TPDB_FILE_RDONLY | TF_OPEN_NOLOCK | TF_OPEN_NOCATALOG,
                    &f, errmsg);
    if (rc != TPDB_OK) {
        return rc;
    }
    if (f->page_count == UINT32_MAX ||
        (img = tpdb_calloc((size_t)f->page_count + 1, TF_PAGE)) == NULL) {
        tpdbErrf(errmsg, "%s: image: out of memory", f->name);
        rc = TPDB_NOMEM;
        goto out;
    }
    rc = tpdb_file_read_mapped(f, 1, f->page_count + 1, img);
    if (rc != TPDB_OK) {
        tpdbErrf(errmsg, "%s", f->errmsg);
        tpdb_free(img);
        goto out;
    }
    *image = img;
    *n_pages = f->page_count + 1;
out:
    tpdb_file_close(f);
    return rc;
}
