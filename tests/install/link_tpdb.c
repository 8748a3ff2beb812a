/*
 * A user's program, built by tests/install/check_install.sh from the
 * installed tpdb.h and `pkg-config --cflags --libs tpdbraft` alone: it
 * registers the tpdb VFS through the installed libtpdbraft.so.0 and exits
 * non-zero if that does not work.
 */
#include <stdio.h>
#include <tpdb.h>

int main(void)
{
    int rc = tpdb_register();
    if (rc != SQLITE_OK) {
        fprintf(stderr, "tpdb_register: %s\n", sqlite3_errstr(rc));
        return 1;
    }
    if (sqlite3_vfs_find("tpdb") == NULL) {
        fprintf(stderr, "no tpdb VFS after tpdb_register\n");
        return 1;
    }
    if (tpdb_errmsg()[0] != '\0') {
        fprintf(stderr, "tpdb_errmsg before any failure: %s\n", tpdb_errmsg());
        return 1;
    }
    tpdb_shutdown();
    return 0;
}
