/*
 * tpdb: the command-line tool. Subcommands are rows of a dispatch table;
 * each parses its own arguments. Anything else starts the interactive
 * shell (tpdb_shell.h). Exit codes: 0 success, 1 the operation failed
 * (message on stderr), 2 usage error.
 *
 *   tpdb [OPTIONS] [HOST:PORT | FILE]    the shell
 *   tpdb import [--progress|--quiet] data.tpdb app.db
 *   tpdb export [--progress|--quiet] [--strict] app.db out.tpdb
 *   tpdb recover DIR --members ID@HOST:PORT,...
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "raftfsm/recover.h"
#include "shell/tpdb_migrate.h"
#include "shell/tpdb_shell.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

struct command {
    const char *name;
    const char *args;
    const char *help;
    int (*run)(int argc, char **argv);
};

static int runImport(int argc, char **argv);
static int runExport(int argc, char **argv);
static int runRecover(int argc, char **argv);
static int runHelp(int argc, char **argv);

static const struct command commands[] = {
    {"import", "[--progress|--quiet] SRC.tpdb DEST.db",
     "copy every table of a TrashPandaDB file into a new SQLite database",
     runImport},
    {"export", "[--progress|--quiet] [--strict] SRC.db DEST.tpdb",
     "write a new TrashPandaDB 0.8 file from a SQLite database", runExport},
    {"recover", "DIR --members ID@HOST:PORT,...",
     "on a stopped node, replace the cluster's members after a lost quorum "
     "(then start it and let the others rejoin)",
     runRecover},
    {"help", "", "show this help", runHelp},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f,
            "usage: tpdb [OPTIONS] [HOST:PORT | FILE]  (the shell; "
            "tpdb -help)\n"
            "       tpdb COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) {
        fprintf(f, "  %s%s%s\n      %s\n", commands[i].name,
                commands[i].args[0] != '\0' ? " " : "", commands[i].args,
                commands[i].help);
    }
    fprintf(f,
            "\noptions:\n"
            "  --progress  always print progress on stderr\n"
            "  --quiet     never print progress (default: only on a "
            "terminal)\n"
            "  --strict    export: fail on an index or DEFAULT TrashPandaDB\n"
            "              cannot hold, instead of leaving it out with a\n"
            "              warning\n"
            "\nexit status: 0 success, 1 failure, 2 usage error\n");
}

static int runHelp(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    usage(stdout);
    return EXIT_OK;
}

/* Parses "[--progress|--quiet] [--strict] A B" after the subcommand name
 * (--strict only for export). Returns 0 and sets *a, *b, opts->progress and
 * opts->strict, or -1 after printing a usage error. */
static int parseTwoPaths(const char *cmd,
                         int argc,
                         char **argv,
                         struct tpdb_migrate_opts *opts,
                         const char **a,
                         const char **b)
{
    const char *paths[2];
    int n = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--progress") == 0) {
            opts->progress = TPDB_PROGRESS_ALWAYS;
        } else if (strcmp(argv[i], "--quiet") == 0) {
            opts->progress = TPDB_PROGRESS_NEVER;
        } else if (strcmp(argv[i], "--strict") == 0 &&
                   strcmp(cmd, "export") == 0) {
            opts->strict = 1;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "tpdb %s: unknown option '%s'\n", cmd, argv[i]);
            return -1;
        } else if (n < 2) {
            paths[n++] = argv[i];
        } else {
            fprintf(stderr, "tpdb %s: too many arguments\n", cmd);
            return -1;
        }
    }
    if (n != 2) {
        fprintf(stderr, "tpdb %s: expected two paths\n", cmd);
        return -1;
    }
    *a = paths[0];
    *b = paths[1];
    return 0;
}

static int report(const char *cmd,
                  int rc,
                  const char *errmsg,
                  const struct tpdb_migrate_stats *stats,
                  const char *dest)
{
    if (rc != TPDB_OK) {
        fprintf(stderr, "tpdb %s: %s\n", cmd, errmsg);
        return EXIT_FAILED;
    }
    fprintf(stderr, "tpdb %s: %u tables, %u indexes, %llu rows -> %s", cmd,
            stats->tables, stats->indexes, (unsigned long long)stats->rows,
            dest);
    if (stats->indexes_left_out > 0 || stats->defaults_left_out > 0) {
        fprintf(stderr,
                " (left out: %u indexes, %u defaults, see the warnings "
                "above)",
                stats->indexes_left_out, stats->defaults_left_out);
    }
    fputc('\n', stderr);
    return EXIT_OK;
}

static int runImport(int argc, char **argv)
{
    struct tpdb_migrate_opts opts = {.version = 1};
    struct tpdb_migrate_stats stats;
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    const char *src;
    const char *dest;
    if (parseTwoPaths("import", argc, argv, &opts, &src, &dest) != 0) {
        fprintf(stderr, "usage: tpdb import %s\n", commands[0].args);
        return EXIT_USAGE;
    }
    int rc = tpdbImport(src, dest, &opts, &stats, errmsg);
    return report("import", rc, errmsg, &stats, dest);
}

static int runExport(int argc, char **argv)
{
    struct tpdb_migrate_opts opts = {.version = 1};
    struct tpdb_migrate_stats stats;
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    const char *src;
    const char *dest;
    if (parseTwoPaths("export", argc, argv, &opts, &src, &dest) != 0) {
        fprintf(stderr, "usage: tpdb export %s\n", commands[1].args);
        return EXIT_USAGE;
    }
    int rc = tpdbExport(src, dest, &opts, &stats, errmsg);
    return report("export", rc, errmsg, &stats, dest);
}

static int runRecover(int argc, char **argv)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    if (argc != 4 || strcmp(argv[2], "--members") != 0) {
        fprintf(stderr, "usage: tpdb recover DIR --members ID@HOST:PORT,...\n");
        return EXIT_USAGE;
    }
    int rc = tpdbNodeRecover(argv[1], argv[3], errmsg);
    if (rc != TPDB_OK) {
        fprintf(stderr, "tpdb recover: %s\n", errmsg);
        return EXIT_FAILED;
    }
    printf("recovered %s: members %s\n", argv[1], argv[3]);
    return EXIT_OK;
}

/* Whether the first argument reads as a mistyped subcommand rather than
 * a shell target: a bare word (no '.', '/' or ':') that names no file,
 * or an empty one. Such a word never silently creates a database. */
static int looksLikeCommand(const char *arg)
{
    struct stat sb;
    if (arg[0] == '-') {
        return 0;
    }
    return arg[0] == '\0' ||
           (strpbrk(arg, "./:") == NULL && stat(arg, &sb) != 0);
}

int main(int argc, char **argv)
{
    const char *name = argc > 1 ? argv[1] : "-";
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        name = "help";
    }
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(name, commands[i].name) == 0) {
            return commands[i].run(argc - 1, argv + 1);
        }
    }
    if (looksLikeCommand(name)) {
        fprintf(stderr,
                "tpdb: unknown command '%s' (try 'tpdb --help'; a database "
                "file is named with a '.' or '/', e.g. ./%s)\n",
                name, name);
        return EXIT_USAGE;
    }
    return tpdbShellMain(argc, argv);
}
