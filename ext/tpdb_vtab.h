/*
 * SQL access to TrashPandaDB page files (.tpdb): the virtual table module
 * `tpdb_table` and the SQL function `tpdb_attach`.
 *
 *   CREATE VIRTUAL TABLE legacy_users USING tpdb_table('data.tpdb', 'users');
 *   SELECT tpdb_attach('data.tpdb', 'legacy_');
 */
#ifndef TPDB_VTAB_H
#define TPDB_VTAB_H

#include <sqlite3.h>

/* Registers on `db`:
 *
 * - the module `tpdb_table(PATH, TABLE [, MODE])`: one table of the TPDB file
 *   at PATH (relative to the process's working directory) with the columns
 *   and declared types of its catalog; the hidden rowid is the TPDB rowid.
 *   MODE is 'rw' (read-write; the file is locked exclusively while this
 *   connection holds it open, see below), 'ro' (read-only) or omitted
 *   (read-write when the file and its directory are writable, otherwise
 *   read-only). Every virtual table of one connection on the same file
 *   shares one handle. For a file in a node's data directory (a node of
 *   this process runs there, or the directory holds `.tpdb/`) the handle,
 *   and with it the file's lock, is open only while a statement has a
 *   cursor on the file (from its first step until it is reset or
 *   finalized), while a write transaction uses it (from its first write to
 *   COMMIT/ROLLBACK) or while a statement is planned: the node can write
 *   replicated commits into the file whenever no statement uses it, and
 *   the next statement sees them. A statement, or a write transaction,
 *   reads one committed state; separate statements of a read-only
 *   transaction may see newer ones. Reopening waits up to 2 s while
 *   another handle (the node writing a commit) holds the file, then fails
 *   with SQLITE_BUSY. Any other file keeps its handle open while a virtual
 *   table uses it. WHERE constraints on the rowid (or an INTEGER
 *   PRIMARY KEY column) use the table's B+ tree (query plan index
 *   "rowid"), equality on the leading columns of a TPDB index uses that
 *   index (query plan index "<index name>"), anything else is a full scan.
 *   INSERT, UPDATE and DELETE write through the file's own transaction:
 *   it begins with the SQLite transaction and commits in its sync phase, so
 *   a failed statement inside an explicit transaction rolls back the whole
 *   TPDB transaction (and later statements fail until ROLLBACK). A rowid
 *   can only be chosen on INSERT through the INTEGER PRIMARY KEY column.
 *   Constraint violations (NOT NULL, UNIQUE, duplicate rowid) are
 *   SQLITE_CONSTRAINT errors; OR IGNORE skips the row, OR REPLACE is not
 *   supported and acts as OR ABORT.
 *   DROP TABLE drops the virtual table only, never TPDB data.
 *
 * - the function `tpdb_attach(PATH [, PREFIX [, MODE]])`: creates, for every
 *   table T of the file, a TEMP virtual table named PREFIX || T (PREFIX
 *   defaults to ''), skipping names that already exist, and returns the
 *   number of tables created. MODE is as above.
 *
 * Errors from the file surface as SQL errors carrying the library's message
 * (which names the file and page). Returns an SQLITE_* code. Call once per
 * connection; the registration lives as long as the connection. */
int tpdbVtabRegister(sqlite3 *db);

#endif /* TPDB_VTAB_H */
