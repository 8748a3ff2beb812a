/*
 * Result sets of the tpdb shell and their output modes (list, column,
 * box, table, csv, json, line), printed byte for byte as the stock
 * sqlite3 3.40 shell prints the same rows. A result owns copies of every
 * name and value; rendering does not change it.
 */
#ifndef TPDB_SHELL_RENDER_H
#define TPDB_SHELL_RENDER_H

#include <stddef.h>
#include <stdio.h>

enum {
    TPDB_VAL_NULL = 0,
    TPDB_VAL_INT,
    TPDB_VAL_REAL,
    TPDB_VAL_TEXT,
    TPDB_VAL_BLOB,
};

enum {
    TPDB_MODE_LIST = 0,
    TPDB_MODE_COLUMN,
    TPDB_MODE_BOX,
    TPDB_MODE_TABLE,
    TPDB_MODE_CSV,
    TPDB_MODE_JSON,
    TPDB_MODE_LINE,
};

/* One value. text holds len bytes plus a NUL: an INTEGER's decimal, a
 * REAL as SQLite prints it ("%!.15g"), a TEXT's or BLOB's bytes; NULL for
 * SQL NULL. real is the REAL's value. */
struct tpdb_value {
    int type;
    char *text;
    size_t len;
    double real;
};

/* ncols names, then nrows rows of ncols values each. */
struct tpdb_result {
    int ncols;
    char **names;
    size_t nrows, cap;
    struct tpdb_value *cells; /* row r, column c at r * ncols + c */
};

/* A new result with ncols columns named "" (NULL when out of memory).
 * Free with tpdbResultFree(). */
struct tpdb_result *tpdbResultNew(int ncols);

/* Sets column i's name to a copy of name. Returns 0 or -1 (no memory). */
int tpdbResultSetName(struct tpdb_result *r, int i, const char *name);

/* Appends a row of NULLs and returns it (ncols values, valid until the
 * next append), or NULL when out of memory. */
struct tpdb_value *tpdbResultAddRow(struct tpdb_result *r);

/* Sets v to type with a copy of len bytes of bytes (ignored for NULL) and
 * real. Returns 0 or -1 (no memory). */
int tpdbValueSet(struct tpdb_value *v,
                 int type,
                 const void *bytes,
                 size_t len,
                 double real);

/* Sets v to the REAL d, formatted as SQLite does. Returns 0 or -1. */
int tpdbValueSetReal(struct tpdb_value *v, double d);

void tpdbResultFree(struct tpdb_result *r);

/* The mode named name ("box"), or -1. */
int tpdbModeByName(const char *name);

/* The name of mode m. */
const char *tpdbModeName(int m);

/* Prints r to out in mode m; headers (list, csv, column) as sqlite3's
 * .headers. Zero rows print nothing, as in sqlite3. */
void tpdbRender(FILE *out, int m, int headers, const struct tpdb_result *r);

#endif /* TPDB_SHELL_RENDER_H */
