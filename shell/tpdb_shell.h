/*
 * The interactive tpdb shell: `tpdb [OPTIONS] [HOST:PORT | FILE]`, a
 * sqlite3-like client for a tpdbd node (JSON-lines API) or for a local
 * database opened through the tpdb VFS.
 */
#ifndef TPDB_SHELL_H
#define TPDB_SHELL_H

/* Runs the shell with tpdb's argv (argv[0] is the program). Returns the
 * exit status: 0, 1 after an error (non-interactive: the first one), 2
 * for a usage error. */
int tpdbShellMain(int argc, char **argv);

#endif /* TPDB_SHELL_H */
