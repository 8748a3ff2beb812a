/*
 * Output modes of the tpdb shell (tpdb_shell_render.h). The columnar
 * modes (column, box, table) follow sqlite3 3.40: widths count UTF-8
 * characters, tabs expand to the next multiple of 8, a value with
 * newlines spans several lines and then every row gets a separator,
 * headers are centred in box and table. csv quotes as sqlite3 does and
 * ends rows with CRLF; json prints REALs with 20 significant digits.
 */
#include "shell/tpdb_shell_render.h"

#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

static const char *const modeNames[] = {"list", "column", "box", "table",
                                        "csv",  "json",   "line"};

int tpdbModeByName(const char *name)
{
    for (int i = 0; i < (int)(sizeof modeNames / sizeof modeNames[0]); i++) {
        if (strcmp(name, modeNames[i]) == 0) {
            return i;
        }
    }
    return -1;
}

const char *tpdbModeName(int m)
{
    return modeNames[m];
}

struct tpdb_result *tpdbResultNew(int ncols)
{
    struct tpdb_result *r = calloc(1, sizeof *r);
    if (r == NULL) {
        return NULL;
    }
    r->ncols = ncols;
    r->names = calloc((size_t)(ncols > 0 ? ncols : 1), sizeof *r->names);
    if (r->names == NULL) {
        free(r);
        return NULL;
    }
    return r;
}

int tpdbResultSetName(struct tpdb_result *r, int i, const char *name)
{
    free(r->names[i]);
    r->names[i] = strdup(name != NULL ? name : "");
    return r->names[i] != NULL ? 0 : -1;
}

struct tpdb_value *tpdbResultAddRow(struct tpdb_result *r)
{
    size_t n = (size_t)r->ncols;
    if (r->nrows == r->cap) {
        size_t cap = r->cap * 2 + 16;
        struct tpdb_value *c = realloc(r->cells, cap * n * sizeof *c);
        if (c == NULL) {
            return NULL;
        }
        r->cells = c;
        r->cap = cap;
    }
    struct tpdb_value *row = r->cells + r->nrows * n;
    memset(row, 0, n * sizeof *row);
    r->nrows++;
    return row;
}

int tpdbValueSet(struct tpdb_value *v,
                 int type,
                 const void *bytes,
                 size_t len,
                 double real)
{
    free(v->text);
    memset(v, 0, sizeof *v);
    v->type = type;
    v->real = real;
    if (type == TPDB_VAL_NULL) {
        return 0;
    }
    v->text = malloc(len + 1);
    if (v->text == NULL) {
        return -1;
    }
    if (len > 0) {
        memcpy(v->text, bytes, len);
    }
    v->text[len] = '\0';
    v->len = len;
    return 0;
}

int tpdbValueSetReal(struct tpdb_value *v, double d)
{
    char buf[64];
    sqlite3_snprintf(sizeof buf, buf, "%!.15g", d);
    return tpdbValueSet(v, TPDB_VAL_REAL, buf, strlen(buf), d);
}

void tpdbResultFree(struct tpdb_result *r)
{
    if (r == NULL) {
        return;
    }
    for (size_t i = 0; i < r->nrows * (size_t)r->ncols; i++) {
        free(r->cells[i].text);
    }
    for (int i = 0; i < r->ncols; i++) {
        free(r->names[i]);
    }
    free(r->cells);
    free(r->names);
    free(r);
}

/* What sqlite3 prints for a value in the text modes: the bytes up to the
 * first NUL, "" for NULL. */
static const char *shown(const struct tpdb_value *v)
{
    return v->text != NULL ? v->text : "";
}

static void renderList(FILE *out, int headers, const struct tpdb_result *r)
{
    if (headers) {
        for (int c = 0; c < r->ncols; c++) {
            fprintf(out, "%s%s", c > 0 ? "|" : "", r->names[c]);
        }
        fputc('\n', out);
    }
    for (size_t i = 0; i < r->nrows; i++) {
        for (int c = 0; c < r->ncols; c++) {
            fprintf(out, "%s%s", c > 0 ? "|" : "",
                    shown(&r->cells[i * (size_t)r->ncols + c]));
        }
        fputc('\n', out);
    }
}

static void csvField(FILE *out, const char *z, int isNull)
{
    int quote = !isNull && z[0] == '\0';
    for (const unsigned char *p = (const unsigned char *)z; *p; p++) {
        if (*p <= ' ' || *p == '"' || *p == '\'' || *p == ',' || *p >= 0x7f) {
            quote = 1;
        }
    }
    if (!quote) {
        fputs(z, out);
        return;
    }
    fputc('"', out);
    for (const char *p = z; *p; p++) {
        if (*p == '"') {
            fputc('"', out);
        }
        fputc(*p, out);
    }
    fputc('"', out);
}

static void renderCsv(FILE *out, int headers, const struct tpdb_result *r)
{
    if (headers && r->nrows > 0) {
        for (int c = 0; c < r->ncols; c++) {
            fputs(c > 0 ? "," : "", out);
            csvField(out, r->names[c], 0);
        }
        fputs("\r\n", out);
    }
    for (size_t i = 0; i < r->nrows; i++) {
        for (int c = 0; c < r->ncols; c++) {
            const struct tpdb_value *v = &r->cells[i * (size_t)r->ncols + c];
            fputs(c > 0 ? "," : "", out);
            csvField(out, shown(v), v->type == TPDB_VAL_NULL);
        }
        fputs("\r\n", out);
    }
}

static void jsonString(FILE *out, const char *z, size_t n)
{
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)z[i];
        if (c == '\\' || c == '"') {
            fputc('\\', out);
            fputc(c, out);
        } else if (c <= 0x1f) {
            const char *esc = c == '\b'   ? "\\b"
                              : c == '\f' ? "\\f"
                              : c == '\n' ? "\\n"
                              : c == '\r' ? "\\r"
                              : c == '\t' ? "\\t"
                                          : NULL;
            if (esc != NULL) {
                fputs(esc, out);
            } else {
                fprintf(out, "\\u%04x", c);
            }
        } else {
            fputc(c, out);
        }
    }
    fputc('"', out);
}

static void jsonValue(FILE *out, const struct tpdb_value *v)
{
    char buf[64];
    switch (v->type) {
        case TPDB_VAL_NULL:
            fputs("null", out);
            break;
        case TPDB_VAL_INT:
            fputs(v->text, out);
            break;
        case TPDB_VAL_REAL:
            if (v->real > 1.7976931348623157e308) {
                fputs("1e999", out);
            } else if (v->real < -1.7976931348623157e308) {
                fputs("-1e999", out);
            } else {
                sqlite3_snprintf(sizeof buf, buf, "%!.20g", v->real);
                fputs(buf, out);
            }
            break;
        case TPDB_VAL_TEXT:
            jsonString(out, v->text, strlen(v->text));
            break;
        default:
            jsonString(out, v->text, v->len);
            break;
    }
}

static void renderJson(FILE *out, const struct tpdb_result *r)
{
    for (size_t i = 0; i < r->nrows; i++) {
        fputs(i == 0 ? "[{" : ",\n{", out);
        for (int c = 0; c < r->ncols; c++) {
            fputs(c > 0 ? "," : "", out);
            jsonString(out, r->names[c], strlen(r->names[c]));
            fputc(':', out);
            jsonValue(out, &r->cells[i * (size_t)r->ncols + c]);
        }
        fputc('}', out);
    }
    if (r->nrows > 0) {
        fputs("]\n", out);
    }
}

static size_t charLen(const char *z)
{
    size_t n = 0;
    for (; *z; z++) {
        n += ((unsigned char)*z & 0xc0) != 0x80;
    }
    return n;
}

static void renderLine(FILE *out, const struct tpdb_result *r)
{
    int w = 5;
    for (int c = 0; c < r->ncols; c++) {
        int len = (int)strlen(r->names[c]);
        w = len > w ? len : w;
    }
    for (size_t i = 0; i < r->nrows; i++) {
        if (i > 0) {
            fputc('\n', out);
        }
        for (int c = 0; c < r->ncols; c++) {
            fprintf(out, "%*s = %s\n", w, r->names[c],
                    shown(&r->cells[i * (size_t)r->ncols + c]));
        }
    }
}

/* A cell of a columnar mode split into display lines: tabs expanded,
 * cut at newlines (and at other control characters, as sqlite3). */
struct cell {
    char **lines;
    size_t *widths;
    size_t n;
};

/* Appends the display line starting at *z; advances *z past it and its
 * newline, or sets it NULL at the end. Returns 0 or -1. */
static int cellAddLine(struct cell *cl, const char **z)
{
    const unsigned char *p = (const unsigned char *)*z;
    size_t cap = strlen(*z) * 8 + 1, j = 0, w = 0;
    char *line = malloc(cap);
    char **lines = realloc(cl->lines, (cl->n + 1) * sizeof *lines);
    size_t *widths = realloc(cl->widths, (cl->n + 1) * sizeof *widths);
    if (lines != NULL) {
        cl->lines = lines;
    }
    if (widths != NULL) {
        cl->widths = widths;
    }
    if (line == NULL || lines == NULL || widths == NULL) {
        free(line);
        return -1;
    }
    for (; *p >= ' ' || *p == '\t'; p++) {
        if (*p == '\t') {
            do {
                line[j++] = ' ';
            } while (++w % 8 != 0);
            continue;
        }
        w += (*p & 0xc0) != 0x80;
        line[j++] = (char)*p;
    }
    line[j] = '\0';
    cl->lines[cl->n] = line;
    cl->widths[cl->n++] = w;
    p += *p != '\0';
    *z = *p != '\0' ? (const char *)p : NULL;
    return 0;
}

static int cellSplit(struct cell *cl, const char *z)
{
    memset(cl, 0, sizeof *cl);
    do {
        if (cellAddLine(cl, &z) != 0) {
            return -1;
        }
    } while (z != NULL);
    return 0;
}

static void cellFree(struct cell *cl)
{
    for (size_t i = 0; i < cl->n; i++) {
        free(cl->lines[i]);
    }
    free(cl->lines);
    free(cl->widths);
}

/* The box-drawing or ASCII pieces of a columnar mode. */
struct frame {
    const char *h;                        /* horizontal line */
    const char *top[3], *mid[3], *bot[3]; /* left, cross, right */
    const char *left, *sep, *right;       /* row pieces */
};

static const struct frame boxFrame = {"\u2500",
                                      {"\u250c", "\u252c", "\u2510"},
                                      {"\u251c", "\u253c", "\u2524"},
                                      {"\u2514", "\u2534", "\u2518"},
                                      "\u2502 ",
                                      " \u2502 ",
                                      " \u2502"};
static const struct frame tableFrame = {
    "-", {"+", "+", "+"}, {"+", "+", "+"}, {"+", "+", "+"}, "| ", " | ", " |"};
static const struct frame columnFrame = {"", {0}, {0}, {0}, "", "  ", ""};

static void rule(FILE *out,
                 const struct frame *f,
                 const char *const *ends,
                 const size_t *w,
                 int ncols)
{
    for (int c = 0; c < ncols; c++) {
        fputs(c == 0 ? ends[0] : ends[1], out);
        for (size_t k = 0; k < w[c] + 2; k++) {
            fputs(f->h, out);
        }
    }
    fprintf(out, "%s\n", ends[2]);
}

static void padded(FILE *out, const char *z, size_t width, size_t w)
{
    fputs(z, out);
    for (size_t k = width; k < w; k++) {
        fputc(' ', out);
    }
}

static void headerRow(FILE *out,
                      const struct frame *f,
                      int mode,
                      const struct tpdb_result *r,
                      const size_t *w)
{
    fputs(f->left, out);
    for (int c = 0; c < r->ncols; c++) {
        size_t n = charLen(r->names[c]);
        fputs(c > 0 ? f->sep : "", out);
        if (mode == TPDB_MODE_COLUMN) {
            padded(out, r->names[c], n, w[c]);
        } else {
            fprintf(out, "%*s%s%*s", (int)((w[c] - n) / 2), "", r->names[c],
                    (int)((w[c] - n + 1) / 2), "");
        }
    }
    fprintf(out, "%s\n", f->right);
    if (mode == TPDB_MODE_COLUMN) {
        for (int c = 0; c < r->ncols; c++) {
            fputs(c > 0 ? "  " : "", out);
            for (size_t k = 0; k < w[c]; k++) {
                fputc('-', out);
            }
        }
        fputc('\n', out);
    } else {
        rule(out, f, f->mid, w, r->ncols);
    }
}

static void dataRow(FILE *out,
                    const struct frame *f,
                    const struct cell *cells,
                    const size_t *w,
                    int ncols)
{
    size_t lines = 1;
    for (int c = 0; c < ncols; c++) {
        lines = cells[c].n > lines ? cells[c].n : lines;
    }
    for (size_t l = 0; l < lines; l++) {
        fputs(f->left, out);
        for (int c = 0; c < ncols; c++) {
            int has = l < cells[c].n;
            fputs(c > 0 ? f->sep : "", out);
            padded(out, has ? cells[c].lines[l] : "",
                   has ? cells[c].widths[l] : 0, w[c]);
        }
        fprintf(out, "%s\n", f->right);
    }
}

static void layout(FILE *out,
                   int mode,
                   int headers,
                   const struct tpdb_result *r,
                   struct cell *cells,
                   size_t *w)
{
    const struct frame *f = mode == TPDB_MODE_BOX     ? &boxFrame
                            : mode == TPDB_MODE_TABLE ? &tableFrame
                                                      : &columnFrame;
    size_t ncells = r->nrows * (size_t)r->ncols;
    int multi = 0;
    for (size_t i = 0; i < ncells; i++) {
        multi |= cells[i].n > 1;
    }
    if (mode != TPDB_MODE_COLUMN) {
        rule(out, f, f->top, w, r->ncols);
    }
    if (mode != TPDB_MODE_COLUMN || headers) {
        headerRow(out, f, mode, r, w);
    }
    for (size_t i = 0; i < r->nrows; i++) {
        if (i > 0 && multi) {
            if (mode == TPDB_MODE_COLUMN) {
                fputc('\n', out);
            } else {
                rule(out, f, f->mid, w, r->ncols);
            }
        }
        dataRow(out, f, cells + i * (size_t)r->ncols, w, r->ncols);
    }
    if (mode != TPDB_MODE_COLUMN) {
        rule(out, f, f->bot, w, r->ncols);
    }
}

static void renderColumnar(FILE *out,
                           int mode,
                           int headers,
                           const struct tpdb_result *r)
{
    size_t ncells = r->nrows * (size_t)r->ncols;
    struct cell *cells = calloc(ncells, sizeof *cells);
    size_t *w = calloc((size_t)r->ncols, sizeof *w);
    size_t done = 0;
    if (cells == NULL || w == NULL) {
        fputs("Error: out of memory\n", stderr);
        goto out;
    }
    for (int c = 0; c < r->ncols; c++) {
        w[c] = charLen(r->names[c]); /* sqlite3 counts names also unshown */
    }
    for (; done < ncells; done++) {
        if (cellSplit(&cells[done], shown(&r->cells[done])) != 0) {
            cellFree(&cells[done]);
            fputs("Error: out of memory\n", stderr);
            goto out;
        }
        for (size_t l = 0; l < cells[done].n; l++) {
            size_t *cw = &w[done % (size_t)r->ncols];
            *cw = cells[done].widths[l] > *cw ? cells[done].widths[l] : *cw;
        }
    }
    layout(out, mode, headers, r, cells, w);
out:
    for (size_t i = 0; i < done; i++) {
        cellFree(&cells[i]);
    }
    free(cells);
    free(w);
}

void tpdbRender(FILE *out, int m, int headers, const struct tpdb_result *r)
{
    if (r == NULL || r->ncols == 0 || (r->nrows == 0 && m != TPDB_MODE_LIST)) {
        return;
    }
    switch (m) {
        case TPDB_MODE_LIST:
            if (r->nrows > 0) {
                renderList(out, headers, r);
            }
            break;
        case TPDB_MODE_CSV:
            renderCsv(out, headers, r);
            break;
        case TPDB_MODE_JSON:
            renderJson(out, r);
            break;
        case TPDB_MODE_LINE:
            renderLine(out, r);
            break;
        default:
            renderColumnar(out, m, headers, r);
            break;
    }
}
