/*
 * Reading database files that SQLite connections of this process may hold
 * open, without taking their locks away.
 *
 * POSIX advisory locks belong to a process and a file: closing ANY
 * descriptor of the file drops every lock the process holds on it. Code
 * that opens and closes a database file by its path (fopen/fclose, or
 * open/close) therefore silently releases the locks of every connection of
 * the process that has the file open, and another process (or a connection
 * closing last) may then checkpoint and delete the WAL under them. These
 * functions open the file through SQLite's "unix" VFS instead, which keeps
 * one lock state per file for the whole process and defers closing a
 * descriptor while locks are held on the file.
 */
#ifndef TPDB_FILEPEEK_H
#define TPDB_FILEPEEK_H

#include <stddef.h>
#include <stdint.h>

/* An open file, read-only. */
struct tpdb_peek;

/* Opens the database file at `path` read-only. *out is owned by the caller,
 * freed by tpdbPeekClose. Errors: TPDB_NOTFOUND (no such file),
 * TPDB_NOMEM, TPDB_IOERR (errmsg says why). */
int tpdbPeekOpen(const char *path, struct tpdb_peek **out, char *errmsg);

/* Size of the file in bytes, as of now. Errors: TPDB_IOERR. */
int tpdbPeekSize(struct tpdb_peek *p, int64_t *size, char *errmsg);

/* Reads n bytes at offset off into buf. Bytes past the end of the file read
 * as zeros; *got (may be NULL) is the number that came from the file.
 * Errors: TPDB_IOERR. */
int tpdbPeekRead(struct tpdb_peek *p,
                 void *buf,
                 size_t n,
                 int64_t off,
                 size_t *got,
                 char *errmsg);

/* fsyncs the file (through the "unix" VFS, so a build with SQLITE_NO_SYNC
 * skips it as SQLite does). Errors: TPDB_IOERR. */
int tpdbPeekSync(struct tpdb_peek *p, char *errmsg);

/* Closes p (NULL is a no-op). */
void tpdbPeekClose(struct tpdb_peek *p);

/* Reads up to n bytes at the start of the file at path into buf; returns
 * how many it read (0 when the file is missing or unreadable). */
size_t tpdbPeekHead(const char *path, void *buf, size_t n);

#endif /* TPDB_FILEPEEK_H */
