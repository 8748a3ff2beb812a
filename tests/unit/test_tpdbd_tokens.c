/*
 * Unit tests of tpdbd's client tokens (shell/tpdbd_tokens.c): new tokens
 * and their file lines, loading a file (comments, blank lines), the role
 * of a token, and each refusal of a file: its mode, a malformed line
 * (named by number), duplicates, no token; the node token file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "shell/tpdbd_tokens.h"

struct fixture {
    char dir[64];
    char path[128];
    char err[512];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    const char *tmp = getenv("TMPDIR");
    if (f == NULL) {
        return -1;
    }
    snprintf(f->dir, sizeof f->dir, "%s/tpdbd-tokens-XXXXXX",
             tmp != NULL && strlen(tmp) < 32 ? tmp : "/tmp");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/tokens", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void writeFile(struct fixture *f, const char *text, mode_t mode)
{
    FILE *out = fopen(f->path, "w");
    assert_non_null(out);
    assert_true(fputs(text, out) >= 0);
    assert_int_equal(fclose(out), 0);
    assert_int_equal(chmod(f->path, mode), 0);
}

static void make(const char *role, const char *name, char *token, char *line)
{
    char err[256];
    assert_int_equal(
        tpdbdTokensMake(role, name, token, line, 256, err, sizeof err), 0);
}

static void testMakeAndCheck(void **state)
{
    struct fixture *f = *state;
    char w[TPDBD_TOKEN_LEN + 1], r[TPDBD_TOKEN_LEN + 1];
    char wl[256], rl[256], text[1024], name[TPDBD_TOKEN_NAME_MAX + 1];
    struct tpdbd_tokens *t = NULL;
    make("write", "app", w, wl);
    make("read", "reports@example", r, rl);
    assert_int_equal(strlen(w), TPDBD_TOKEN_LEN);
    assert_int_equal(strncmp(w, TPDBD_TOKEN_PREFIX, 5), 0);
    assert_string_not_equal(w, r);
    assert_int_equal(strncmp(wl, "app write blake2b:", 18), 0);
    assert_int_equal(strlen(wl), 18 + 64);
    assert_null(strstr(wl, w + 5));
    snprintf(text, sizeof text, "# comment\n\n  \t\n%s\r\n  %s\n", wl, rl);
    writeFile(f, text, 0600);
    assert_int_equal(tpdbdTokensLoad(f->path, &t, f->err, sizeof f->err), 0);
    assert_int_equal(tpdbdTokensCount(t), 2);
    assert_int_equal(tpdbdTokensCheck(t, w, name), TPDBD_ROLE_WRITE);
    assert_string_equal(name, "app");
    assert_int_equal(tpdbdTokensCheck(t, r, name), TPDBD_ROLE_READ);
    assert_string_equal(name, "reports@example");
    w[10] = w[10] == 'a' ? 'b' : 'a';
    assert_int_equal(tpdbdTokensCheck(t, w, name), TPDBD_ROLE_NONE);
    assert_string_equal(name, "");
    assert_int_equal(tpdbdTokensCheck(t, "", NULL), TPDBD_ROLE_NONE);
    tpdbdTokensFree(t);
    assert_string_equal(tpdbdRoleName(TPDBD_ROLE_READ), "read");
}

static void testMakeRefuses(void **state)
{
    char token[TPDBD_TOKEN_LEN + 1], line[256], err[256];
    (void)state;
    assert_int_equal(
        tpdbdTokensMake("admin", "x", token, line, 256, err, sizeof err), -1);
    assert_non_null(strstr(err, "role must be read or write"));
    assert_int_equal(
        tpdbdTokensMake("read", "a b", token, line, 256, err, sizeof err), -1);
    assert_non_null(strstr(err, "--token-name"));
}

/* Loading text (mode 0600) fails with want in the message. */
static void refused(struct fixture *f, const char *text, const char *want)
{
    struct tpdbd_tokens *t = (struct tpdbd_tokens *)1;
    writeFile(f, text, 0600);
    assert_int_equal(tpdbdTokensLoad(f->path, &t, f->err, sizeof f->err), -1);
    assert_null(t);
    if (strstr(f->err, want) == NULL) {
        fail_msg("wanted '%s' in '%s'", want, f->err);
    }
}

static void testRefusals(void **state)
{
    struct fixture *f = *state;
    char w[TPDBD_TOKEN_LEN + 1], wl[256], text[1024], other[256];
    struct tpdbd_tokens *t = NULL;
    make("write", "app", w, wl);
    snprintf(text, sizeof text, "%s\n", wl);
    writeFile(f, text, 0640);
    assert_int_equal(tpdbdTokensLoad(f->path, &t, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "mode 0640"));
    assert_non_null(strstr(f->err, "chmod 600"));
    writeFile(f, text, 0400);
    assert_int_equal(tpdbdTokensLoad(f->path, &t, f->err, sizeof f->err), 0);
    tpdbdTokensFree(t);
    snprintf(text, sizeof text, "%s\napp2 write\n", wl);
    refused(f, text, "line 2: expected NAME ROLE blake2b:HASH");
    snprintf(text, sizeof text, "#\n%s extra\n", wl);
    refused(f, text, "line 2: expected NAME ROLE");
    refused(f, "a/b read blake2b:00\n", "line 1: NAME must be");
    refused(f, "a owner blake2b:00\n", "line 1: ROLE must be read or write");
    refused(f, "a read sha256:00\n", "line 1: HASH must be blake2b:");
    refused(f,
            "a read blake2b:"
            "zz00000000000000000000000000000000000000000000000000000000000000"
            "\n",
            "line 1: HASH must be");
    snprintf(other, sizeof other, "other%s", strchr(wl, ' '));
    snprintf(text, sizeof text, "%s\n%s\n", wl, other);
    refused(f, text, "line 2: the same token is already on an earlier line");
    snprintf(text, sizeof text, "%s\n%s\n", wl, wl);
    refused(f, text, "line 2: NAME already used");
    refused(f, "# only comments\n\n", "no token in the file");
    memset(text, 'a', 600);
    text[600] = '\0';
    refused(f, text, "line 1: longer than");
    unlink(f->path);
    assert_int_equal(tpdbdTokensLoad(f->path, &t, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "No such file"));
    assert_int_equal(tpdbdTokensLoad(f->dir, &t, f->err, sizeof f->err), -1);
}

static void testReadSecret(void **state)
{
    struct fixture *f = *state;
    char w[TPDBD_TOKEN_LEN + 1], wl[256], text[256];
    char got[TPDBD_TOKEN_LEN + 1];
    make("write", "nodes", w, wl);
    snprintf(text, sizeof text, "%s\n", w);
    writeFile(f, text, 0600);
    assert_int_equal(tpdbdTokensReadSecret(f->path, got, f->err, sizeof f->err),
                     0);
    assert_string_equal(got, w);
    writeFile(f, text, 0604);
    assert_int_equal(tpdbdTokensReadSecret(f->path, got, f->err, sizeof f->err),
                     -1);
    assert_non_null(strstr(f->err, "--node-token-file"));
    writeFile(f, wl, 0600);
    assert_int_equal(tpdbdTokensReadSecret(f->path, got, f->err, sizeof f->err),
                     -1);
    assert_non_null(strstr(f->err, "the first line must be a token"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(testMakeAndCheck, setup, teardown),
        cmocka_unit_test_setup_teardown(testMakeRefuses, setup, teardown),
        cmocka_unit_test_setup_teardown(testRefusals, setup, teardown),
        cmocka_unit_test_setup_teardown(testReadSecret, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
