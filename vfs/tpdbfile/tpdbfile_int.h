/*
 * Internals shared by the tpdbfile_*.c modules of the native TPDB page format
 * backend: the handle, the page maps, and the pager, catalog, codec and
 * B+ tree entry points. Not installed; only vfs/tpdbfile*.c include it.
 *
 * Layout reminders (docs/tpdb-format.md): page N at byte 64 + (N-1)*4096;
 * WAL = 32-byte header + frames of (page_no u32, flags u32, 4096 bytes).
 */
#ifndef TPDB_TPDBFILE_INT_H
#define TPDB_TPDBFILE_INT_H

#include <stdint.h>

#include "vfs/tpdbfile/tpdbfile.h"

#define TF_PAGE TPDB_FILE_PAGE_SIZE
#define TF_HDR 64
#define TF_WAL_HDR 32
#define TF_FRAME_HDR 8
#define TF_MAX_DEPTH 32
#define TF_OVF_DATA (TF_PAGE - 8)
#define TF_CAT_CHUNK0 (TF_PAGE - 16)
#define TF_CAT_CHUNK (TF_PAGE - 4)
/* Largest index key we write: keeps interior cells small so that an
 * interior page always splits in two by bytes. */
#define TF_MAX_INDEX_KEY 1000

/* Internal open flags for tfOpen, beyond the public TPDB_FILE_*. */
enum {
    TF_OPEN_NOLOCK = 0x100,   /* take no flock (tpdb_file_image) */
    TF_OPEN_NOCATALOG = 0x200 /* do not load the catalog */
};

enum {
    TF_PT_FREE = 0,
    TF_PT_INTERIOR = 1,
    TF_PT_LEAF = 2,
    TF_PT_OVF = 3,
    TF_PT_CATALOG = 4
};

/* Page number -> owned 4096-byte image, open addressing; `order` keeps the
 * page numbers in first-insertion order. */
struct tfPageMap {
    uint32_t *keys;
    uint8_t **pages;
    size_t cap;
    uint32_t *order;
    size_t n;
};

/* The pre-statement image of a page touched by the running statement;
 * `img` is NULL when the page was not dirty before. */
struct tfUndo {
    uint32_t pgno;
    uint8_t *img;
};

/* The in-memory catalog: public structs plus the storage behind them. */
struct tfCatalog {
    struct tpdb_table *tables;
    unsigned ntables;
    struct tpdb_index *indexes;
    unsigned nindexes;
    struct tpdb_value **defaults; /* per table, ncols evaluated DEFAULTs */
    void **blocks;                /* every allocation behind the above */
    size_t nblocks;
};

/* What a statement or transaction can change in the catalog, saved so that
 * a rollback restores it without allocating. */
struct tfCatSave {
    unsigned ntables;
    unsigned nindexes;
    uint32_t *troot;
    int64_t *tnext;
    uint32_t *iroot;
};

struct tpdb_file {
    char *path;
    char *wal_path;
    const char *name; /* basename of path, for messages */
    int fd;
    int wal_fd;
    int rdonly;
    char errmsg[TPDB_ERRMSG_SIZE];
    struct tpdb_file_info info;
    uint64_t real_pages; /* pages that can hold non-zero data */
    uint32_t page_count; /* in effect, including the open transaction */
    uint32_t free_head;
    uint32_t c_page_count; /* as of the last commit */
    uint32_t c_free_head;
    struct tfPageMap wal;   /* committed WAL pages not yet checkpointed */
    struct tfPageMap dirty; /* the open transaction's pages */
    uint64_t wal_end;       /* WAL offset after the last durable commit */
    int wal_valid;          /* the WAL header was read and is ours */
    uint32_t *wal_pages;    /* replayed page numbers, for the API */
    size_t n_wal_pages;
    struct tfUndo *undo;
    size_t nundo;
    size_t capundo;
    int in_stmt;
    int in_txn;
    uint32_t s_page_count;
    uint32_t s_free_head;
    uint64_t gen; /* bumped by every write call: invalidates cursors */
    struct tfCatalog cat;
    struct tfCatSave s_cat;       /* at statement start */
    struct tfCatSave t_cat;       /* at transaction start */
    struct tpdb_file_hooks hooks; /* replication; version 0 when none */
    int repl_full;  /* the next replicated commit carries the whole file */
    int repl_stale; /* a replicated commit was not written locally */
};

/* ---- tpdbfile_pager.c ---- */
int tfMapPut(struct tfPageMap *m, uint32_t pgno, const uint8_t *img);
uint8_t *tfMapGet(const struct tfPageMap *m, uint32_t pgno);
void tfMapDel(struct tfPageMap *m, uint32_t pgno);
void tfMapClear(struct tfPageMap *m);
/* Copies page pgno (dirty, WAL, file, zeros) into buf. TPDB_CORRUPT for 0
 * or > page_count. */
int tfPageRead(struct tpdb_file *f, uint32_t pgno, uint8_t *buf);
/* Stores a new image of pgno in the dirty set (undo-logged). */
int tfPageWrite(struct tpdb_file *f, uint32_t pgno, const uint8_t *buf);
int tfPageAlloc(struct tpdb_file *f, uint32_t *pgno);
int tfPageFree(struct tpdb_file *f, uint32_t pgno);
/* Upper bound on the steps of any acyclic page chain. */
uint64_t tfChainLimit(const struct tpdb_file *f);
/* Writes the dirty pages as WAL frames, the sentinel, fdatasyncs and
 * checkpoints. *durable says whether the commit survived (the WAL sync
 * succeeded) even when the checkpoint then failed. */
int tfCommitWrite(struct tpdb_file *f, int *durable);
void tfDirtyDrop(struct tpdb_file *f);
/* Whole reads and writes at an offset (EINTR retried); *got: bytes read
 * before EOF. tfPwrite returns TPDB_FULL on ENOSPC, else TPDB_IOERR. */
int tfPread(int fd, uint8_t *buf, size_t len, uint64_t off, size_t *got);
int tfPwrite(int fd, const uint8_t *buf, size_t len, uint64_t off);
/* Resets the WAL to its 32-byte header (not synced). */
int tfWalHeaderWrite(struct tpdb_file *f);
/* The commit sentinel's page image for f's page count and free-list
 * head (TF_PAGE bytes). */
void tfSentinelEncode(const struct tpdb_file *f, uint8_t *snt);
/* tpdb_file_test_crash_after_frames: exits before frame nframes. */
void tfCrashCheck(long nframes);
/* Cuts the page file to the header plus page_count pages (synced). */
int tfTruncateToCount(struct tpdb_file *f);
/* tpdb_file_open with internal flags (TF_OPEN_*) too. */
int tfOpen(const char *path, int flags, struct tpdb_file **out, char *errmsg);
/* The 64-byte header of the current page count and free-list head. */
void tfHeaderEncode(const struct tpdb_file *f, uint8_t *hdr);

/* ---- tpdbfile_repl.c ---- */
/* Before a commit: hands it to hooks->commit when hooks are installed and
 * the commit changes anything. *replicated says whether the hook accepted
 * it (then tfReplDone must follow the local write). */
int tfReplCommit(struct tpdb_file *f, int *replicated);
void tfReplDone(struct tpdb_file *f, int durable);
/* Checks that txn is in the replication mapping (tpdbfile.h): page size,
 * page numbers increasing up to db_pages, and with `header` the header
 * page first (magic, version, page count matching db_pages). Errors:
 * TPDB_INVALID with errmsg. */
int tfReplCheckTxn(const struct tpdb_txn *txn, int header, char *errmsg);
/* Before a write statement: the stale check and hooks->write_check. */
int tfReplWriteCheck(struct tpdb_file *f);
void tfUndoClear(struct tpdb_file *f);
void tfUndoApply(struct tpdb_file *f);

/* ---- tpdbfile_catalog.c ---- */
int tfCatalogLoad(struct tpdb_file *f);
void tfCatalogFree(struct tfCatalog *cat);
int tfCatalogStore(struct tpdb_file *f);
int tfCatalogAddTable(struct tpdb_file *f,
                      const char *name,
                      const struct tpdb_column *cols,
                      unsigned ncols,
                      int pk_idx,
                      uint32_t root);
int tfCatalogAddIndex(struct tpdb_file *f,
                      const char *name,
                      const char *table,
                      const char *const *cols,
                      unsigned ncols,
                      uint32_t root,
                      int unique);
int tfCatalogTableIdx(const struct tpdb_file *f, const char *name);
int tfCatalogSave(struct tpdb_file *f, struct tfCatSave *save);
void tfCatalogRestore(struct tpdb_file *f, const struct tfCatSave *save);
void tfCatalogSaveFree(struct tfCatSave *save);

/* ---- tpdbfile_codec.c ---- */
int tfKeyCmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);
int tfKeyCmpPrefix(const uint8_t *key,
                   size_t klen,
                   const uint8_t *prefix,
                   size_t plen);
void tfRowidKey(int64_t rowid, uint8_t *key);
int64_t tfRowidFromKey(const uint8_t *key);
/* Decodes a row into vals[0..ncols); missing columns from defs. */
int tfRowDecode(const uint8_t *row,
                size_t len,
                unsigned ncols,
                const struct tpdb_value *defs,
                struct tpdb_value *vals,
                unsigned *stored,
                char *errmsg);
/* Encodes n values; *out is tpdb_malloc'd. */
int tfRowEncode(const struct tpdb_value *vals,
                unsigned n,
                uint8_t **out,
                size_t *len);
/* Appends the index encoding of v to buf (cap bytes) at *len. */
int tfIndexKeyAppend(const struct tpdb_value *v,
                     uint8_t *buf,
                     size_t cap,
                     size_t *len);

/* ---- tpdbfile_btree.c ---- */
struct tfCell {
    const uint8_t *key;
    size_t klen;
    const uint8_t *val; /* inline value or NULL for overflow */
    uint32_t vlen;
    uint32_t ovf; /* first overflow page, 0 if inline */
};
int tfLeafCheck(struct tpdb_file *f, uint32_t pgno, const uint8_t *page);
int tfInteriorCheck(struct tpdb_file *f, uint32_t pgno, const uint8_t *page);
void tfLeafCell(const uint8_t *page, unsigned i, struct tfCell *c);
void tfInteriorCell(const uint8_t *page,
                    unsigned i,
                    uint32_t *child,
                    const uint8_t **key,
                    size_t *klen);
uint32_t tfInteriorChild(const uint8_t *page, unsigned i);
/* Reads an overflow chain of vlen bytes into out. */
int tfOverflowRead(struct tpdb_file *f,
                   uint32_t pgno,
                   uint32_t first,
                   uint32_t vlen,
                   uint8_t *out);

/* Cursor on any tree root, seeks by raw key, and the current value (table
 * trees; overflow assembled). For the writer's lookups. */
int tfCursorOpenRoot(struct tpdb_file *f,
                     uint32_t root,
                     int is_index,
                     struct tpdb_cursor **out);
int tfCursorSeekKey(struct tpdb_cursor *c,
                    int op,
                    const uint8_t *key,
                    size_t klen);
int tfCursorValue(struct tpdb_cursor *c, const uint8_t **val, size_t *vlen);

/* ---- tpdbfile_tree.c ---- */
/* Inserts key -> val (TPDB_INVALID if the key exists); *root changes when
 * the root splits. */
int tfTreeInsert(struct tpdb_file *f,
                 uint32_t *root,
                 const uint8_t *key,
                 size_t klen,
                 const uint8_t *val,
                 size_t vlen);
int tfTreeDelete(struct tpdb_file *f,
                 uint32_t root,
                 const uint8_t *key,
                 size_t klen,
                 int *found);

#endif /* TPDB_TPDBFILE_INT_H */
