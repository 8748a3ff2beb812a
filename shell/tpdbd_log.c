/*
 * tpdbd's logger (tpdbd_log.h). Each message is formatted into one buffer
 * and written with a single write(2) so that lines from several threads
 * never interleave.
 */
#include "shell/tpdbd_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int minLevel = TPDBD_INFO;

static const char *const levelNames[] = {"debug", "info", "warn", "error"};

int tpdbdLogParse(const char *name, int *level)
{
    for (int i = 0; i <= TPDBD_ERROR; i++) {
        if (strcmp(name, levelNames[i]) == 0) {
            *level = i;
            return 0;
        }
    }
    return -1;
}

void tpdbdLogSetLevel(int level)
{
    minLevel = level;
}

int tpdbdLogEnabled(int level)
{
    return level >= minLevel;
}

void tpdbdLog(int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    int n;
    if (!tpdbdLogEnabled(level)) {
        return;
    }
    n = snprintf(line, sizeof line, "tpdbd[%d] %s ", (int)getpid(),
                 levelNames[level]);
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    n = (int)strlen(line);
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* Nowhere left to report it. */
    }
}
