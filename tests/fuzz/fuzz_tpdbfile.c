/*
 * Fuzz target for the native TPDB page-file and WAL readers (vfs/tpdbfile*).
 *
 * Input: u32 LE length L, then L bytes of page file, then the WAL (the rest).
 * Each input is written to a private directory under /dev/shm (or $TMPDIR),
 * opened read-only and walked completely (header, chains, every table and
 * index, rows, seeks); inputs whose first byte is odd are then also opened
 * read-write and written to (insert, update, delete, create), so the writer
 * meets hostile files too. Any error code is fine; a crash, hang, leak or
 * out-of-bounds access is a bug.
 *
 * Two builds of this one file:
 * - libFuzzer (clang): meson builds `fuzz_tpdbfile` when the compiler is
 *   clang; or by hand:
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I. \
 *       tests/fuzz/fuzz_tpdbfile.c vfs/base.c vfs/tpdbfile_*.c -o fuzz
 *     fuzz_tpdbfile_replay --write-seeds corpus/   # fixtures as seeds
 *     cp tests/fuzz/regressions/[a-z]*.bin corpus/
 *     ./fuzz -max_total_time=600 -max_len=300000 corpus/
 *   (give libFuzzer only a scratch corpus directory: it writes into its
 *   corpus directories).
 * - Replay (any compiler, -DTPDB_FUZZ_REPLAY): runs every file under the
 *   directories given, then mutates seeds built from the genuine fixtures
 *   (tests/fixtures/tpdb) for --seconds N with a fixed --seed; this runs in
 *   the unit suite. It fails if a directory is missing or empty, a seed
 *   fixture is missing, or it replayed nothing.
 * Crashes found are kept in tests/fuzz/regressions/.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vfs/tpdbfile/tpdbfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fzDir[256];
static char fzPath[300];
static char fzWal[310];

static int fzSetup(void)
{
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    if (fzDir[0] != '\0') {
        return 0;
    }
    snprintf(fzDir, sizeof fzDir, "%s/tpdbfuzz-XXXXXX", base);
    if (mkdtemp(fzDir) == NULL) {
        return -1;
    }
    snprintf(fzPath, sizeof fzPath, "%s/f.tpdb", fzDir);
    snprintf(fzWal, sizeof fzWal, "%s/f.tpdb-wal", fzDir);
    return 0;
}

static int fzWriteFile(const char *path, const uint8_t *p, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (fp == NULL) {
        return -1;
    }
    size_t w = n == 0 ? 0 : fwrite(p, 1, n, fp);
    fclose(fp);
    return w == n ? 0 : -1;
}

static void fzScanTable(struct tpdb_file *f, const char *name)
{
    struct tpdb_cursor *c = NULL;
    const struct tpdb_value *v;
    unsigned n, st;
    int64_t rowid = 0, last = 0;
    if (tpdb_cursor_open_table(f, name, &c) != TPDB_OK) {
        return;
    }
    int rc = tpdb_cursor_first(c);
    for (int i = 0; rc == TPDB_OK && !tpdb_cursor_eof(c); i++) {
        if (tpdb_cursor_rowid(c, &rowid) == TPDB_OK && i == 0) {
            last = rowid;
        }
        (void)tpdb_cursor_row(c, &v, &n, &st);
        rc = tpdb_cursor_next(c);
    }
    (void)tpdb_cursor_last(c);
    (void)tpdb_cursor_prev(c);
    (void)tpdb_cursor_seek_rowid(c, TPDB_SEEK_EQ, last);
    (void)tpdb_cursor_seek_rowid(c, TPDB_SEEK_GE,
                                 (int64_t)((uint64_t)rowid - 1));
    (void)tpdb_cursor_seek_rowid(c, TPDB_SEEK_LE,
                                 (int64_t)((uint64_t)rowid + 1));
    tpdb_cursor_close(c);
}

static void fzScanIndex(struct tpdb_file *f, const char *name)
{
    struct tpdb_cursor *c = NULL;
    const uint8_t *key;
    size_t klen;
    int64_t rowid;
    struct tpdb_value probe[2] = {
        {.type = TPDB_VINT, .i = -1},
        {.type = TPDB_VTEXT, .base = (const uint8_t *)"m", .len = 1}};
    if (tpdb_cursor_open_index(f, name, &c) != TPDB_OK) {
        return;
    }
    int rc = tpdb_cursor_first(c);
    while (rc == TPDB_OK && !tpdb_cursor_eof(c)) {
        (void)tpdb_cursor_key(c, &key, &klen);
        (void)tpdb_cursor_rowid(c, &rowid);
        rc = tpdb_cursor_next(c);
    }
    for (int op = TPDB_SEEK_EQ; op <= TPDB_SEEK_LE; op++) {
        (void)tpdb_cursor_seek_index(c, op, &probe[0], 1);
        (void)tpdb_cursor_seek_index(c, op, &probe[1], 1);
        (void)tpdb_cursor_next(c);
    }
    tpdb_cursor_close(c);
}

static void fzRead(struct tpdb_file *f)
{
    struct tpdb_file_info info;
    uint32_t *pages = NULL;
    size_t n = 0;
    tpdb_file_get_info(f, &info);
    if (tpdb_file_chain(f, TPDB_CHAIN_FREELIST, &pages, &n) == TPDB_OK) {
        tpdb_free(pages);
    }
    if (tpdb_file_chain(f, TPDB_CHAIN_CATALOG, &pages, &n) == TPDB_OK) {
        tpdb_free(pages);
    }
    (void)tpdb_file_wal_pages(f, &n);
    for (unsigned i = 0; i < tpdb_file_table_count(f) && i < 64; i++) {
        fzScanTable(f, tpdb_file_table(f, i)->name);
    }
    for (unsigned i = 0; i < tpdb_file_index_count(f) && i < 64; i++) {
        fzScanIndex(f, tpdb_file_index(f, i)->name);
    }
}

static void fzWrite(struct tpdb_file *f)
{
    static uint8_t blob[9000];
    struct tpdb_value vals[4] = {
        {.type = TPDB_VINT, .i = 5},
        {.type = TPDB_VTEXT, .base = (const uint8_t *)"fz", .len = 2},
        {.type = TPDB_VBLOB, .base = blob, .len = sizeof blob},
        {.type = TPDB_VNULL}};
    struct tpdb_column col = {"c", "INTEGER", 0, "7"};
    const char *icol[1] = {"c"};
    const struct tpdb_table *t = tpdb_file_table(f, 0);
    if (t != NULL) {
        char name[256];
        snprintf(name, sizeof name, "%s", t->name);
        unsigned nv = t->ncols < 4 ? t->ncols : 4;
        (void)tpdb_file_insert(f, name, vals, nv, NULL);
        (void)tpdb_file_update(f, name, 1, vals, nv);
        (void)tpdb_file_delete(f, name, 2);
    }
    (void)tpdb_file_begin(f);
    if (tpdb_file_create_table(f, "fz_t", &col, 1, 0) == TPDB_OK) {
        (void)tpdb_file_insert(f, "fz_t", vals, 1, NULL);
        (void)tpdb_file_create_index(f, "fz_i", "fz_t", icol, 1, 1);
    }
    (void)tpdb_file_commit(f);
    fzRead(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tpdb_file *f = NULL;
    char err[TPDB_ERRMSG_SIZE];
    if (size < 4 || fzSetup() != 0) {
        return 0;
    }
    size_t len = tpdbGet32(data);
    len = len > size - 4 ? size - 4 : len;
    if (fzWriteFile(fzPath, data + 4, len) != 0 ||
        fzWriteFile(fzWal, data + 4 + len, size - 4 - len) != 0) {
        return 0;
    }
    if (tpdb_file_open(fzPath, TPDB_FILE_RDONLY, &f, err) == TPDB_OK) {
        fzRead(f);
        tpdb_file_close(f);
    }
    if ((data[0] & 1) != 0 && tpdb_file_open(fzPath, 0, &f, err) == TPDB_OK) {
        fzWrite(f);
        tpdb_file_close(f);
    }
    return 0;
}

#ifdef TPDB_FUZZ_REPLAY
/* ---- Replay mode ---------------------------------------------------------
 */

static void fzCleanup(void)
{
    if (fzDir[0] != '\0') {
        unlink(fzPath);
        unlink(fzWal);
        rmdir(fzDir);
    }
}

static uint64_t fzRng = 0x9E3779B97F4A7C15ull;

static uint64_t fzRand(void)
{
    fzRng ^= fzRng << 13;
    fzRng ^= fzRng >> 7;
    fzRng ^= fzRng << 17;
    return fzRng;
}

static uint8_t *fzReadFile(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    uint8_t *buf = NULL;
    long len;
    if (fp == NULL || fseek(fp, 0, SEEK_END) != 0 || (len = ftell(fp)) < 0) {
        if (fp != NULL) {
            fclose(fp);
        }
        return NULL;
    }
    rewind(fp);
    buf = malloc((size_t)len + 1);
    if (buf != NULL && fread(buf, 1, (size_t)len, fp) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    *n = (size_t)len;
    return buf;
}

/* Packs a fixture pair into one input. */
static uint8_t *fzSeed(const char *dir, const char *name, size_t *n)
{
    char p[1024];
    size_t dn = 0, wn = 0;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    uint8_t *d = fzReadFile(p, &dn);
    snprintf(p, sizeof p, "%s/%s-wal", dir, name);
    uint8_t *w = fzReadFile(p, &wn);
    uint8_t *out = d == NULL ? NULL : malloc(4 + dn + wn);
    if (out != NULL) {
        tpdbPut32(out, (uint32_t)dn);
        memcpy(out + 4, d, dn);
        if (w != NULL) {
            memcpy(out + 4 + dn, w, wn);
        }
        *n = 4 + dn + (w == NULL ? 0 : wn);
    }
    free(d);
    free(w);
    return out;
}

/* One random structural mutation: byte noise, u32 page numbers, small
 * counts, truncation, or a WAL appended with random frames. */
static size_t fzMutate(uint8_t *buf, size_t n, size_t cap)
{
    size_t body = n - 4;
    size_t at = 4 + (body == 0 ? 0 : fzRand() % body);
    switch (fzRand() % 6) {
        case 0:
            buf[at] ^= (uint8_t)(1u << (fzRand() % 8));
            break;
        case 1:
            if (at + 4 <= n) {
                tpdbPut32(buf + at, (uint32_t)(fzRand() % 40));
            }
            break;
        case 2:
            if (at + 2 <= n) {
                tpdbPut16(buf + at, (uint16_t)(fzRand() % 5000));
            }
            break;
        case 3:
            return at;
        case 4:
            buf[at] = (uint8_t)fzRand();
            break;
        default:
            if (n + 8 + 4096 <= cap) {
                memset(buf + n, 0, 8 + 4096);
                tpdbPut32(buf + n, (uint32_t)(fzRand() % 12));
                tpdbPut32(buf + n + 4, (uint32_t)(fzRand() % 2));
                return n + 8 + 4096;
            }
    }
    return n;
}

/* Runs every regular file of dir but *.md; returns how many ran, or -1 if
 * the directory or one of its files cannot be read. */
static int fzRunDir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    struct stat st;
    char p[1024];
    int count = 0;
    if (d == NULL) {
        fprintf(stderr, "cannot open corpus %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while (count >= 0 && (e = readdir(d)) != NULL) {
        size_t n = 0;
        size_t len = strlen(e->d_name);
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' ||
            (len > 3 && strcmp(e->d_name + len - 3, ".md") == 0) ||
            (stat(p, &st) == 0 && !S_ISREG(st.st_mode))) {
            continue;
        }
        uint8_t *buf = fzReadFile(p, &n);
        if (buf == NULL) {
            fprintf(stderr, "cannot read corpus file %s\n", p);
            count = -1;
        } else {
            LLVMFuzzerTestOneInput(buf, n);
            count++;
        }
        free(buf);
    }
    closedir(d);
    return count;
}

static const char *fzFixtures[] = {"01_empty.tpdb",   "02_types.tpdb",
                                   "05_indexes.tpdb", "07_catalog_shrunk.tpdb",
                                   "09_altered.tpdb", "04_overflow.tpdb"};
#define FZ_NFIX (sizeof fzFixtures / sizeof fzFixtures[0])

/* Returns 0 if every fixture seed can be built from fixdir, else -1 with a
 * message: mutating a subset (or nothing) would pass without testing. */
static int fzCheckSeeds(const char *fixdir)
{
    for (size_t i = 0; i < FZ_NFIX; i++) {
        size_t n = 0;
        uint8_t *s = fzSeed(fixdir, fzFixtures[i], &n);
        if (s == NULL) {
            fprintf(stderr, "cannot read fixture seed %s/%s\n", fixdir,
                    fzFixtures[i]);
            return -1;
        }
        free(s);
    }
    return 0;
}

/* Writes the fixture seeds into out; returns 0, or -1 with a message. */
static int fzWriteSeeds(const char *fixdir, const char *out)
{
    char p[1024];
    if (fzCheckSeeds(fixdir) != 0) {
        return -1;
    }
    for (size_t i = 0; i < FZ_NFIX; i++) {
        size_t n = 0;
        uint8_t *s = fzSeed(fixdir, fzFixtures[i], &n);
        snprintf(p, sizeof p, "%s/%s.seed", out, fzFixtures[i]);
        int rc = s == NULL ? -1 : fzWriteFile(p, s, n);
        free(s);
        if (rc != 0) {
            fprintf(stderr, "cannot write %s\n", p);
            return -1;
        }
    }
    return 0;
}

static long fzMutateRun(const char *fixdir, double seconds)
{
    uint64_t end = tpdbNowMs() + (uint64_t)(seconds * 1000);
    long runs = 0;
    while (tpdbNowMs() < end) {
        size_t n = 0;
        uint8_t *seed = fzSeed(fixdir, fzFixtures[fzRand() % FZ_NFIX], &n);
        if (seed == NULL) {
            break;
        }
        size_t cap = n + 4 * (8 + 4096);
        uint8_t *buf = malloc(cap);
        memcpy(buf, seed, n);
        int k = 1 + (int)(fzRand() % 8);
        for (int i = 0; i < k && n > 4; i++) {
            n = fzMutate(buf, n, cap);
        }
        if (fzRand() % 2 == 0) {
            buf[0] ^= 1; /* odd: the writer runs too (the split moves) */
        }
        LLVMFuzzerTestOneInput(buf, n);
        free(buf);
        free(seed);
        runs++;
    }
    return runs;
}

/* Exits non-zero if a corpus directory is missing, unreadable or empty, if
 * a fixture seed is missing, or if nothing at all was replayed: a replay
 * of zero inputs tests nothing. */
int main(int argc, char **argv)
{
    double seconds = 0;
    char fixdir[1024];
    const char *root = getenv("TPDB_SOURCE_ROOT");
    int files = 0, bad = 0, seeded = 0;
    snprintf(fixdir, sizeof fixdir, "%s/tests/fixtures/tpdb",
             root == NULL ? "." : root);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            fzRng = strtoull(argv[++i], NULL, 0) | 1;
        } else if (strcmp(argv[i], "--write-seeds") == 0 && i + 1 < argc) {
            bad |= fzWriteSeeds(fixdir, argv[++i]) != 0;
            seeded = 1;
        } else {
            int n = fzRunDir(argv[i]);
            if (n == 0) {
                fprintf(stderr, "corpus %s holds no inputs\n", argv[i]);
            }
            bad |= n <= 0;
            files += n > 0 ? n : 0;
        }
    }
    if (seconds > 0 && fzCheckSeeds(fixdir) != 0) {
        bad = 1;
    }
    long runs = seconds > 0 && !bad ? fzMutateRun(fixdir, seconds) : 0;
    fzCleanup();
    printf("replayed %d files, %ld mutated inputs\n", files, runs);
    if (!bad && !seeded && files + runs == 0) {
        fprintf(stderr,
                "replayed zero inputs: give a corpus directory or "
                "--seconds N\n");
        bad = 1;
    }
    return bad ? 1 : 0;
}
#endif
