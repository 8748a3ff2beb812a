/*
 * The tpdb VFS shim: registration over SQLite's "unix" VFS, the io methods
 * (every one passes through to the unix file), the per-process registry of
 * open databases, the db_open/db_close hooks, the PRAGMAs that would
 * bypass replication (journal_mode other than WAL, locking_mode=EXCLUSIVE)
 * and the guard that refuses a write of a replicated database that got out
 * of WAL mode by another path (see notWal).
 * Leader capture lives in capture.c, follower apply in apply.c.
 *
 * Global state: the list of registered VFS instances (never freed, they
 * stay registered for the life of the process) and the registry of open
 * databases, both under one mutex.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "vfs/vfsint.h"
#include "vfs/walfile.h"

/* A registered VFS: SQLite's struct first, then what the methods need. */
struct vfsInstance {
    sqlite3_vfs base;
    sqlite3_vfs *root; /* the "unix" VFS */
    char *name;
    int has_hooks;
    struct tpdb_vfs_hooks hooks;
    struct vfsInstance *next;
};

static pthread_mutex_t vfsMutex = PTHREAD_MUTEX_INITIALIZER;
static struct vfsInstance *vfsInstances;
static struct vfsDb *vfsRegistry;

static sqlite3_vfs *rootOf(sqlite3_vfs *vfs)
{
    return ((struct vfsInstance *)vfs->pAppData)->root;
}

/* Registry of open databases. */

static struct vfsDb *registryAcquire(const char *path)
{
    struct vfsDb *db;
    pthread_mutex_lock(&vfsMutex);
    for (db = vfsRegistry; db != NULL; db = db->next) {
        if (strcmp(db->path, path) == 0) {
            db->refs++;
            goto out;
        }
    }
    db = tpdb_calloc(1, sizeof *db);
    if (db == NULL) {
        goto out;
    }
    db->path = tpdb_strdup(path);
    if (db->path == NULL) {
        tpdb_free(db);
        db = NULL;
        goto out;
    }
    db->refs = 1;
    db->next = vfsRegistry;
    vfsRegistry = db;
out:
    pthread_mutex_unlock(&vfsMutex);
    return db;
}

static void registryRelease(struct vfsDb *db)
{
    struct vfsDb **pp;
    if (db == NULL) {
        return;
    }
    pthread_mutex_lock(&vfsMutex);
    if (--db->refs > 0) {
        pthread_mutex_unlock(&vfsMutex);
        return;
    }
    for (pp = &vfsRegistry; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == db) {
            *pp = db->next;
            break;
        }
    }
    pthread_mutex_unlock(&vfsMutex);
    captureFree(&db->session);
    tpdb_free(db->path);
    tpdb_free(db);
}

/* The guard. Capture sees WAL frames written under the shared-memory write
 * lock only; a replicated database written any other way would differ from
 * the cluster's copy. The PRAGMAs that do that are refused (pragmaCheck),
 * but only on the database the PRAGMA names: an ATTACHed database starts in
 * rollback mode (the extension switches main databases only), so does a
 * connection through a VFS layered over tpdb, and journal_mode or
 * locking_mode with no schema applies to every attached database while
 * SQLite asks the main database's VFS alone. So the files refuse, whoever
 * asks: a replicated main file the RESERVED lock (taken by rollback-journal
 * write transactions only; WAL mode never takes it), a write to it while
 * no WAL-index is mapped (not WAL mode: journal_mode=OFF or MEMORY, which
 * need no RESERVED after an EXCLUSIVE lock), and its WAL file a write
 * without the write lock seen here (WAL with locking_mode=EXCLUSIVE, whose
 * WAL-index is heap memory, or a VFS layered over tpdb that implements the
 * xShm methods itself, as SQLite's testvfs does: capture cannot see its
 * transactions at all). Allowed: the one rollback-journal transaction in which
 * PRAGMA journal_mode=WAL switches the file into WAL mode (wal_switch; with
 * no schema, on a replicated main database, also an attached file's, which
 * may change only page 1's switch bytes), and main-file writes that change
 * no byte (a rollback of what was refused). */

/* Set on this thread by PRAGMA journal_mode=WAL on a replicated main file:
 * with no schema the PRAGMA switches every attached database too, and the
 * file control reaches the main database alone, so an attached file in
 * rollback mode learns of it only here. Its switch transaction may then
 * take RESERVED (wal_switch 3), and may change only what a switch changes
 * (switchWriteOk). Cleared by any other PRAGMA, by the next WAL write
 * lock and by a main file's unlock to NONE on this thread: a later
 * statement. */
static _Thread_local int walSwitchPending;

/* Records why a write was refused and returns TPDB_SQLITE_NOTWAL. */
static int notWal(const struct vfsFile *f, const char *what)
{
    const char *path = f->db != NULL ? f->db->path : "?";
    captureSetError(
        "%s: %s would bypass replication: a replicated database "
        "is written in WAL mode only (PRAGMA schema.journal_mode"
        "=WAL on an ATTACHed database or a connection through "
        "another VFS, locking_mode=NORMAL)",
        path, what);
    tpdbLog(TPDB_LOG_ERROR, "tpdb: %s", tpdbVfsLastError());
    return TPDB_SQLITE_NOTWAL;
}

/* Succeeds when the main file `f` may be written at all: WAL mode (its
 * checkpoints) or the switch into WAL. */
static int mainWritable(const struct vfsFile *f)
{
    return !f->replicated || f->shm_mapped || f->wal_switch == 2;
}

/* Succeeds when writing amt bytes of buf at ofst of `f` is what the switch
 * into WAL writes: page 1 with the file format bytes (18, 19) set to 2, and
 * else only the change counter (24-27) and version numbers (92-99) that
 * every rollback-journal commit updates, or a new database's first page. */
static int switchWriteOk(struct vfsFile *f,
                         const void *buf,
                         int amt,
                         sqlite3_int64 ofst)
{
    const uint8_t *p = buf;
    sqlite3_int64 size = 0;
    uint8_t *cur;
    int ok = 1;
    if (ofst != 0 || amt < 100 || p[18] != 2 || p[19] != 2 ||
        f->real->pMethods->xFileSize(f->real, &size) != SQLITE_OK) {
        return 0;
    }
    if (size == 0) {
        return 1;
    }
    cur = tpdb_malloc((size_t)amt);
    if (cur == NULL ||
        f->real->pMethods->xRead(f->real, cur, amt, ofst) != SQLITE_OK) {
        tpdb_free(cur);
        return 0;
    }
    for (int i = 0; i < amt && ok; i++) {
        int may_change =
            i == 18 || i == 19 || (i >= 24 && i < 28) || (i >= 92 && i < 100);
        ok = may_change || cur[i] == p[i];
    }
    tpdb_free(cur);
    return ok;
}

/* Succeeds when writing amt bytes of buf at ofst of `f` changes nothing. */
static int sameBytes(struct vfsFile *f,
                     const void *buf,
                     int amt,
                     sqlite3_int64 ofst)
{
    uint8_t stack[4096];
    uint8_t *cur = amt <= (int)sizeof stack ? stack : tpdb_malloc((size_t)amt);
    int same;
    if (cur == NULL) {
        return 0;
    }
    same = f->real->pMethods->xRead(f->real, cur, amt, ofst) == SQLITE_OK &&
           memcmp(cur, buf, (size_t)amt) == 0;
    if (cur != stack) {
        tpdb_free(cur);
    }
    return same;
}

/* io methods: pass-through, plus close, write, file control and shm lock. */

static int vfsClose(sqlite3_file *file)
{
    struct vfsFile *f = (struct vfsFile *)file;
    /* A connection closing while holding the write lock ends its session. */
    int ended = f->kind == VFS_FILE_MAIN ? captureDetach(f) : -1;
    int rc = f->real->pMethods->xClose(f->real);
    if (f->kind == VFS_FILE_MAIN) {
        captureNotifyEnd(f, ended);
        if (f->replicated && f->hooks.db_close != NULL) {
            f->hooks.db_close(f->hooks.arg, f->handle);
        }
    }
    registryRelease(f->db);
    return rc;
}

static int vfsRead(sqlite3_file *file, void *buf, int amt, sqlite3_int64 ofst)
{
    sqlite3_file *r = ((struct vfsFile *)file)->real;
    return r->pMethods->xRead(r, buf, amt, ofst);
}

static int vfsWrite(sqlite3_file *file,
                    const void *buf,
                    int amt,
                    sqlite3_int64 ofst)
{
    struct vfsFile *f = (struct vfsFile *)file;
    if (f->kind == VFS_FILE_WAL && f->db->session.active) {
        return captureWalWrite(f, buf, amt, ofst);
    }
    if (f->kind == VFS_FILE_WAL && f->replicated) {
        return notWal(f,
                      "a WAL write without tpdb seeing the WAL write "
                      "lock (locking_mode=EXCLUSIVE, or a VFS layered over "
                      "tpdb that keeps a WAL-index of its own)");
    }
    if (f->kind == VFS_FILE_MAIN && !mainWritable(f) &&
        !sameBytes(f, buf, amt, ofst) &&
        (f->wal_switch != 3 || !switchWriteOk(f, buf, amt, ofst))) {
        return notWal(f, "a write outside WAL mode");
    }
    return f->real->pMethods->xWrite(f->real, buf, amt, ofst);
}

static int vfsTruncate(sqlite3_file *file, sqlite3_int64 size)
{
    struct vfsFile *f = (struct vfsFile *)file;
    sqlite3_int64 now = 0;
    if (f->kind == VFS_FILE_MAIN && !mainWritable(f) &&
        (f->real->pMethods->xFileSize(f->real, &now) != SQLITE_OK ||
         now != size)) {
        return notWal(f, "a truncation outside WAL mode");
    }
    return f->real->pMethods->xTruncate(f->real, size);
}

static int vfsSync(sqlite3_file *file, int flags)
{
    struct vfsFile *f = (struct vfsFile *)file;
    if (f->kind == VFS_FILE_WAL && f->sync_skip != NULL &&
        f->sync_skip(f->sync_skip_arg)) {
        return SQLITE_OK;
    }
    int rc = f->real->pMethods->xSync(f->real, flags);
    if (rc != SQLITE_OK && f->kind == VFS_FILE_WAL && f->db != NULL &&
        f->db->session.active) {
        return captureSyncFailed(f, rc);
    }
    return rc;
}

static int vfsFileSize(sqlite3_file *file, sqlite3_int64 *size)
{
    sqlite3_file *r = ((struct vfsFile *)file)->real;
    return r->pMethods->xFileSize(r, size);
}

static int vfsLock(sqlite3_file *file, int lock)
{
    struct vfsFile *f = (struct vfsFile *)file;
    int rc;
    int attached_switch = 0;
    if (f->kind == VFS_FILE_MAIN && f->replicated &&
        lock == SQLITE_LOCK_RESERVED && f->wal_switch != 1) {
        attached_switch =
            walSwitchPending && f->wal_switch == 0 && !f->shm_mapped;
        if (!attached_switch) {
            return notWal(f, "a rollback-journal write transaction");
        }
    }
    rc = f->real->pMethods->xLock(f->real, lock);
    if (rc == SQLITE_OK && lock == SQLITE_LOCK_RESERVED && f->wal_switch == 1) {
        f->wal_switch = 2;
    } else if (rc == SQLITE_OK && attached_switch) {
        f->wal_switch = 3;
    }
    return rc;
}

static int vfsUnlock(sqlite3_file *file, int lock)
{
    struct vfsFile *f = (struct vfsFile *)file;
    if (f->kind == VFS_FILE_MAIN && lock == SQLITE_LOCK_NONE) {
        walSwitchPending = 0; /* a statement ended: the PRAGMA's is over */
    }
    if (f->wal_switch >= 2 && lock <= SQLITE_LOCK_SHARED) {
        f->wal_switch = 0; /* the switch's transaction ended */
    }
    return f->real->pMethods->xUnlock(f->real, lock);
}

static int vfsCheckReservedLock(sqlite3_file *file, int *out)
{
    sqlite3_file *r = ((struct vfsFile *)file)->real;
    return r->pMethods->xCheckReservedLock(r, out);
}

/* Refuses the PRAGMAs that would let a commit skip replication, and lets
 * journal_mode=WAL on a file not in WAL mode yet switch it (the guard allows
 * its rollback-journal transaction). Returns SQLITE_NOTFOUND to let SQLite
 * handle everything else. */
static int pragmaCheck(struct vfsFile *f, char **args)
{
    const char *name = args[1];
    const char *value = args[2];
    walSwitchPending = 0;
    if (value == NULL) {
        return SQLITE_NOTFOUND;
    }
    if (strcasecmp(name, "journal_mode") == 0 &&
        strcasecmp(value, "wal") == 0) {
        if (!f->shm_mapped && f->wal_switch == 0) {
            f->wal_switch = 1;
        }
        walSwitchPending = 1;
        return SQLITE_NOTFOUND;
    }
    if (strcasecmp(name, "journal_mode") == 0) {
        args[0] =
            sqlite3_mprintf("tpdb: replicated databases must stay in WAL mode");
        return args[0] != NULL ? SQLITE_ERROR : SQLITE_NOMEM;
    }
    if (strcasecmp(name, "locking_mode") == 0 &&
        strcasecmp(value, "exclusive") == 0) {
        args[0] = sqlite3_mprintf(
            "tpdb: locking_mode=EXCLUSIVE would bypass replication");
        return args[0] != NULL ? SQLITE_ERROR : SQLITE_NOMEM;
    }
    return SQLITE_NOTFOUND;
}

static int vfsFileControl(sqlite3_file *file, int op, void *arg)
{
    struct vfsFile *f = (struct vfsFile *)file;
    if (op == SQLITE_FCNTL_PRAGMA && f->kind == VFS_FILE_MAIN &&
        f->hooks.version != 0) {
        int rc = pragmaCheck(f, (char **)arg);
        if (rc != SQLITE_NOTFOUND) {
            return rc;
        }
    }
    if (op == SQLITE_FCNTL_VFSNAME) {
        /* Let the unix VFS name itself, then prefix ours. */
        int rc = f->real->pMethods->xFileControl(f->real, op, arg);
        if (rc == SQLITE_OK) {
            char *inner = *(char **)arg;
            *(char **)arg = sqlite3_mprintf("tpdb/%z", inner);
        }
        return rc;
    }
    return f->real->pMethods->xFileControl(f->real, op, arg);
}

static int vfsSectorSize(sqlite3_file *file)
{
    sqlite3_file *r = ((struct vfsFile *)file)->real;
    return r->pMethods->xSectorSize(r);
}

static int vfsDeviceCharacteristics(sqlite3_file *file)
{
    sqlite3_file *r = ((struct vfsFile *)file)->real;
    return r->pMethods->xDeviceCharacteristics(r);
}

static int vfsShmMap(sqlite3_file *file,
                     int region,
                     int size,
                     int extend,
                     void volatile **pp)
{
    struct vfsFile *f = (struct vfsFile *)file;
    int rc = f->real->pMethods->xShmMap(f->real, region, size, extend, pp);
    if (rc == SQLITE_OK && *pp != NULL) {
        f->shm_mapped = 1; /* WAL mode: the switch, if any, is done */
        f->wal_switch = 0;
    }
    return rc;
}

static int vfsShmLock(sqlite3_file *file, int ofst, int n, int flags)
{
    struct vfsFile *f = (struct vfsFile *)file;
    int tracked = f->kind == VFS_FILE_MAIN && f->replicated && ofst == 0;
    int ended = -1;
    int rc;
    if (tracked && (flags & SQLITE_SHM_UNLOCK) != 0) {
        ended = captureDetach(f);
    }
    if (tracked && (flags & SQLITE_SHM_EXCLUSIVE) != 0 &&
        (flags & SQLITE_SHM_LOCK) != 0) {
        walSwitchPending = 0; /* a write transaction: a later statement */
    }
    if (tracked && (flags & SQLITE_SHM_EXCLUSIVE) != 0 &&
        (flags & SQLITE_SHM_LOCK) != 0 && f->hooks.version >= 2 &&
        f->hooks.before_write_lock != NULL) {
        f->hooks.before_write_lock(f->hooks.arg, f->handle);
    }
    rc = f->real->pMethods->xShmLock(f->real, ofst, n, flags);
    if (!tracked) {
        return rc;
    }
    if ((flags & SQLITE_SHM_UNLOCK) != 0) {
        captureNotifyEnd(f, ended);
    } else if (rc == SQLITE_OK && (flags & SQLITE_SHM_EXCLUSIVE) != 0) {
        captureBegin(f);
    }
    return rc;
}

static void vfsShmBarrier(sqlite3_file *file)
{
    sqlite3_file *r = ((struct vfsFile *)file)->real;
    r->pMethods->xShmBarrier(r);
}

static int vfsShmUnmap(sqlite3_file *file, int del)
{
    struct vfsFile *f = (struct vfsFile *)file;
    f->shm_mapped = 0;
    return f->real->pMethods->xShmUnmap(f->real, del);
}

static int vfsFetch(sqlite3_file *file, sqlite3_int64 ofst, int amt, void **pp)
{
    sqlite3_file *r = ((struct vfsFile *)file)->real;
    return r->pMethods->xFetch(r, ofst, amt, pp);
}

static int vfsUnfetch(sqlite3_file *file, sqlite3_int64 ofst, void *p)
{
    sqlite3_file *r = ((struct vfsFile *)file)->real;
    return r->pMethods->xUnfetch(r, ofst, p);
}

const sqlite3_io_methods vfsIoMethods = {
    3,
    vfsClose,
    vfsRead,
    vfsWrite,
    vfsTruncate,
    vfsSync,
    vfsFileSize,
    vfsLock,
    vfsUnlock,
    vfsCheckReservedLock,
    vfsFileControl,
    vfsSectorSize,
    vfsDeviceCharacteristics,
    vfsShmMap,
    vfsShmLock,
    vfsShmBarrier,
    vfsShmUnmap,
    vfsFetch,
    vfsUnfetch,
};

/* VFS methods. */

/* Fills in the main-file part of a freshly opened file: registry entry,
 * hooks copy and the db_open call. A read-only connection (mode=ro,
 * SQLITE_OPEN_READONLY, immutable=1) passes through to "unix" without the
 * hooks: it cannot write, so it needs no node, and it must work where no
 * node can run (read-only media). Returns an SQLITE_* code. */
static int openMain(struct vfsInstance *inst,
                    struct vfsFile *f,
                    const char *name,
                    int flags)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    int rc;
    f->db = registryAcquire(name);
    if (f->db == NULL) {
        return SQLITE_NOMEM;
    }
    pthread_mutex_lock(&vfsMutex);
    if (inst->has_hooks) {
        f->hooks = inst->hooks;
    }
    pthread_mutex_unlock(&vfsMutex);
    if ((flags & SQLITE_OPEN_READONLY) != 0 ||
        sqlite3_uri_boolean(name, "immutable", 0)) {
        memset(&f->hooks, 0, sizeof f->hooks);
        return SQLITE_OK;
    }
    if (f->hooks.version == 0 ||
        sqlite3_uri_boolean(name, TPDB_URI_INTERNAL, 0)) {
        return SQLITE_OK;
    }
    f->replicated = 1;
    if (f->hooks.db_open == NULL) {
        return SQLITE_OK;
    }
    rc = f->hooks.db_open(f->hooks.arg, name, name, &f->handle, errmsg);
    if (rc != TPDB_OK) {
        tpdbLog(TPDB_LOG_ERROR, "tpdb: open %s: %s", name, errmsg);
        captureSetError("open %s: %s", name, errmsg);
        registryRelease(f->db);
        f->db = NULL;
        return SQLITE_CANTOPEN;
    }
    return SQLITE_OK;
}

/* Undoes openMain for a main file whose unix open then failed. */
static void unopenMain(struct vfsFile *f)
{
    if (f->replicated && f->hooks.db_close != NULL) {
        f->hooks.db_close(f->hooks.arg, f->handle);
    }
    registryRelease(f->db);
    f->db = NULL;
}

static int vfsOpen(sqlite3_vfs *vfs,
                   sqlite3_filename name,
                   sqlite3_file *file,
                   int flags,
                   int *out_flags)
{
    struct vfsInstance *inst = vfs->pAppData;
    struct vfsFile *f = (struct vfsFile *)file;
    int rc = SQLITE_OK;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)(f + 1);
    if (name != NULL && (flags & SQLITE_OPEN_MAIN_DB) != 0) {
        /* The hook first: it may start the node, which may replace the
         * file (a database fetched from a peer) before this connection
         * holds it open. */
        f->kind = VFS_FILE_MAIN;
        rc = openMain(inst, f, name, flags);
        if (rc != SQLITE_OK) {
            return rc;
        }
    }
    rc = inst->root->xOpen(inst->root, name, f->real, flags, out_flags);
    if (rc != SQLITE_OK) {
        if (f->kind == VFS_FILE_MAIN) {
            unopenMain(f);
        }
        return rc;
    }
    if (name != NULL && (flags & SQLITE_OPEN_WAL) != 0) {
        f->kind = VFS_FILE_WAL;
        f->db = registryAcquire(sqlite3_filename_database(name));
        if (f->db == NULL) {
            f->real->pMethods->xClose(f->real);
            return SQLITE_NOMEM;
        }
        /* As openMain decides for the main file (SQLite gives the WAL
         * file its database's URI parameters and read-only flag). */
        pthread_mutex_lock(&vfsMutex);
        f->replicated = inst->has_hooks && inst->hooks.version != 0;
        pthread_mutex_unlock(&vfsMutex);
        if ((flags & SQLITE_OPEN_READONLY) != 0 ||
            sqlite3_uri_boolean(name, "immutable", 0) ||
            sqlite3_uri_boolean(name, TPDB_URI_INTERNAL, 0)) {
            f->replicated = 0;
        }
    }
    f->base.pMethods = &vfsIoMethods;
    return SQLITE_OK;
}

static int vfsDelete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    sqlite3_vfs *root = rootOf(vfs);
    return root->xDelete(root, name, sync_dir);
}

static int vfsAccess(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    sqlite3_vfs *root = rootOf(vfs);
    return root->xAccess(root, name, flags, out);
}

static int vfsFullPathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    sqlite3_vfs *root = rootOf(vfs);
    return root->xFullPathname(root, name, n, out);
}

static void *vfsDlOpen(sqlite3_vfs *vfs, const char *name)
{
    sqlite3_vfs *root = rootOf(vfs);
    return root->xDlOpen(root, name);
}

static void vfsDlError(sqlite3_vfs *vfs, int n, char *out)
{
    sqlite3_vfs *root = rootOf(vfs);
    root->xDlError(root, n, out);
}

static void (*vfsDlSym(sqlite3_vfs *vfs, void *lib, const char *sym))(void)
{
    sqlite3_vfs *root = rootOf(vfs);
    return root->xDlSym(root, lib, sym);
}

static void vfsDlClose(sqlite3_vfs *vfs, void *lib)
{
    sqlite3_vfs *root = rootOf(vfs);
    root->xDlClose(root, lib);
}

static int vfsRandomness(sqlite3_vfs *vfs, int n, char *out)
{
    sqlite3_vfs *root = rootOf(vfs);
    return root->xRandomness(root, n, out);
}

static int vfsSleep(sqlite3_vfs *vfs, int us)
{
    sqlite3_vfs *root = rootOf(vfs);
    return root->xSleep(root, us);
}

static int vfsCurrentTime(sqlite3_vfs *vfs, double *out)
{
    sqlite3_vfs *root = rootOf(vfs);
    return root->xCurrentTime(root, out);
}

static int vfsGetLastError(sqlite3_vfs *vfs, int n, char *out)
{
    sqlite3_vfs *root = rootOf(vfs);
    return root->xGetLastError(root, n, out);
}

static int vfsCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    sqlite3_vfs *root = rootOf(vfs);
    return root->xCurrentTimeInt64(root, out);
}

static int vfsSetSystemCall(sqlite3_vfs *vfs,
                            const char *name,
                            sqlite3_syscall_ptr fn)
{
    sqlite3_vfs *root = rootOf(vfs);
    return root->xSetSystemCall(root, name, fn);
}

static sqlite3_syscall_ptr vfsGetSystemCall(sqlite3_vfs *vfs, const char *name)
{
    sqlite3_vfs *root = rootOf(vfs);
    return root->xGetSystemCall(root, name);
}

static const char *vfsNextSystemCall(sqlite3_vfs *vfs, const char *name)
{
    sqlite3_vfs *root = rootOf(vfs);
    return root->xNextSystemCall(root, name);
}

/* Creates an instance for `name`; called with vfsMutex held. */
static struct vfsInstance *instanceNew(const char *name, sqlite3_vfs *root)
{
    struct vfsInstance *inst = tpdb_calloc(1, sizeof *inst);
    if (inst == NULL) {
        return NULL;
    }
    inst->name = tpdb_strdup(name);
    if (inst->name == NULL) {
        tpdb_free(inst);
        return NULL;
    }
    inst->root = root;
    inst->base = (sqlite3_vfs){
        .iVersion = 3,
        .szOsFile = (int)sizeof(struct vfsFile) + root->szOsFile,
        .mxPathname = root->mxPathname,
        .zName = inst->name,
        .pAppData = inst,
        .xOpen = vfsOpen,
        .xDelete = vfsDelete,
        .xAccess = vfsAccess,
        .xFullPathname = vfsFullPathname,
        .xDlOpen = vfsDlOpen,
        .xDlError = vfsDlError,
        .xDlSym = vfsDlSym,
        .xDlClose = vfsDlClose,
        .xRandomness = vfsRandomness,
        .xSleep = vfsSleep,
        .xCurrentTime = vfsCurrentTime,
        .xGetLastError = vfsGetLastError,
        .xCurrentTimeInt64 = vfsCurrentTimeInt64,
        .xSetSystemCall = vfsSetSystemCall,
        .xGetSystemCall = vfsGetSystemCall,
        .xNextSystemCall = vfsNextSystemCall,
    };
    inst->next = vfsInstances;
    vfsInstances = inst;
    return inst;
}

int tpdbVfsRegister(const char *name,
                    const struct tpdb_vfs_hooks *hooks,
                    int make_default)
{
    struct vfsInstance *inst;
    sqlite3_vfs *root;
    int rc = sqlite3_initialize();
    if (rc != SQLITE_OK) {
        return rc;
    }
    root = sqlite3_vfs_find("unix");
    if (name == NULL || root == NULL || root->iVersion < 3 ||
        (hooks != NULL && hooks->version < 1)) {
        return SQLITE_MISUSE;
    }
    pthread_mutex_lock(&vfsMutex);
    for (inst = vfsInstances; inst != NULL; inst = inst->next) {
        if (strcmp(inst->name, name) == 0) {
            break;
        }
    }
    if (inst == NULL) {
        inst = instanceNew(name, root);
    }
    if (inst != NULL) {
        inst->has_hooks = hooks != NULL;
        memset(&inst->hooks, 0, sizeof inst->hooks);
        if (hooks != NULL) {
            inst->hooks = *hooks;
        }
    }
    pthread_mutex_unlock(&vfsMutex);
    if (inst == NULL) {
        return SQLITE_NOMEM;
    }
    return sqlite3_vfs_register(&inst->base, make_default);
}

void *tpdbVfsHandleOf(sqlite3 *conn)
{
    sqlite3_file *fp = NULL;
    if (sqlite3_file_control(conn, "main", SQLITE_FCNTL_FILE_POINTER, &fp) !=
            SQLITE_OK ||
        fp == NULL || fp->pMethods != &vfsIoMethods) {
        return NULL;
    }
    struct vfsFile *f = (struct vfsFile *)fp;
    return f->kind == VFS_FILE_MAIN && f->replicated ? f->handle : NULL;
}

/* The tpdb WAL file of conn's main database, or NULL. */
static struct vfsFile *walOf(sqlite3 *conn)
{
    sqlite3_file *fp = NULL;
    if (sqlite3_file_control(conn, "main", SQLITE_FCNTL_JOURNAL_POINTER, &fp) !=
            SQLITE_OK ||
        fp == NULL || fp->pMethods != &vfsIoMethods) {
        return NULL;
    }
    struct vfsFile *f = (struct vfsFile *)fp;
    return f->kind == VFS_FILE_WAL ? f : NULL;
}

int tpdbVfsWalSyncFilter(sqlite3 *conn,
                         int (*skip)(void *arg),
                         void *arg,
                         char *errmsg)
{
    struct vfsFile *wal = walOf(conn);
    if (wal == NULL) {
        walCtxConnRead(conn);
        wal = walOf(conn);
    }
    if (wal == NULL) {
        tpdbErrf(errmsg, "WAL sync filter: no tpdb WAL open on the connection");
        return TPDB_INVALID;
    }
    wal->sync_skip = skip;
    wal->sync_skip_arg = arg;
    return TPDB_OK;
}
