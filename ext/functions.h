/*
 * tpdb's SQL functions (status, leader, membership changes).
 */
#ifndef TPDB_EXT_FUNCTIONS_H
#define TPDB_EXT_FUNCTIONS_H

#include <sqlite3.h>

/* Registers the tpdb_* SQL functions on db. Returns an SQLITE_* code. */
int extFunctionsRegister(sqlite3 *db);

#endif /* TPDB_EXT_FUNCTIONS_H */
