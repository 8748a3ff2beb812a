/*
 * Reads and fsyncs of database files by the node, outside any connection,
 * that never drop the SQLite locks of this process. POSIX record locks
 * belong to the process, and closing any descriptor of a file releases
 * every one it holds on that file: a plain open()/close() of a database
 * while a connection of this process holds its SHARED lock would let
 * another process take EXCLUSIVE, checkpoint and delete the WAL under it.
 * These go through SQLite's "unix" VFS, which keeps such a descriptor open
 * until the process holds no lock on the file.
 */
#ifndef TPDB_DBFILE_H
#define TPDB_DBFILE_H

#include <stddef.h>

/* Reads up to n bytes at offset 0 of the file at path into buf. Returns
 * how many were read (fewer at end of file), or -1 if it cannot be opened
 * or read. */
long tpdbDbFileHead(const char *path, void *buf, size_t n);

/* fsyncs the file at path. TPDB_OK also if it does not exist; else
 * TPDB_IOERR with errmsg. */
int tpdbDbFileSync(const char *path, char *errmsg);

#endif /* TPDB_DBFILE_H */
