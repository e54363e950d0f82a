#include "inputs.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "util.h"

#define MAX_LIST_BYTES (64u << 20)

int paths_add(path_list *l, const char *path) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char **grown = realloc(l->path, (size_t)cap * sizeof *grown);
        if (!grown) return SA_EXIT_INTERNAL;
        l->path = grown, l->cap = cap;
    }
    if (!(l->path[l->n] = strdup(path))) return SA_EXIT_INTERNAL;
    l->n++;
    return SA_OK;
}

void paths_free(path_list *l) {
    for (int i = 0; i < l->n; i++) free(l->path[i]);
    free(l->path);
    memset(l, 0, sizeof *l);
}

int is_image_name(const char *name) {
    static const char *ext[] = {".png", ".jpg", ".jpeg", ".bmp", ".tga", ".gif", ".ppm", ".pgm", ".pnm", ".psd", ".hdr"};
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (strcasecmp(dot, ext[i]) == 0) return 1;
    return 0;
}

char *path_stem(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    return dot && dot != base ? strndup(base, (size_t)(dot - base)) : strdup(base);
}

int paths_parse_list(path_list *l, const char *text, size_t len, const char *base_dir, const char *where, sa_error *err) {
    size_t i = 0;
    int line = 0;
    while (i < len) {
        size_t start = i;
        while (i < len && text[i] != '\n') i++;
        size_t end = i++;
        line++;
        while (start < end && (text[start] == ' ' || text[start] == '\t')) start++;
        while (end > start && (text[end - 1] == ' ' || text[end - 1] == '\t' || text[end - 1] == '\r')) end--;
        if (start == end || text[start] == '#') continue;
        if (memchr(text + start, 0, end - start))
            return sa_fail(err, SA_EXIT_INPUT, "%s:%d: line contains a NUL byte", where, line);
        if (end - start > 4095) return sa_fail(err, SA_EXIT_INPUT, "%s:%d: path longer than 4095 bytes", where, line);
        char *p = malloc(end - start + 1); /* not strndup: the text need not end in a NUL */
        if (p) memcpy(p, text + start, end - start), p[end - start] = 0;
        char *full = p ? (base_dir ? path_join(base_dir, p) : strdup(p)) : NULL;
        free(p);
        int code = full ? paths_add(l, full) : SA_EXIT_INTERNAL;
        free(full);
        if (code) return sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory", where);
    }
    return SA_OK;
}

static int by_string(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int expand_dir(path_list *l, const char *dir, sa_error *err) {
    DIR *d = opendir(dir);
    if (!d) return sa_fail(err, SA_EXIT_INPUT, "%s: cannot open directory: %s", dir, strerror(errno));
    int first = l->n, code = SA_OK;
    struct dirent *e;
    while (!code && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !is_image_name(e->d_name)) continue;
        char *full = path_join(dir, e->d_name);
        code = full ? paths_add(l, full) : SA_EXIT_INTERNAL;
        free(full);
    }
    closedir(d);
    if (code) return sa_fail(err, code, "%s: out of memory", dir);
    qsort(l->path + first, (size_t)(l->n - first), sizeof *l->path, by_string);
    return SA_OK;
}

int paths_expand(path_list *l, const char *arg, sa_error *err) {
    if (arg[0] == '@') {
        const char *file = arg + 1;
        FILE *f = fopen(file, "rb");
        if (!f) return sa_fail(err, SA_EXIT_INPUT, "%s: cannot open list: %s", file, strerror(errno));
        char *text = malloc(MAX_LIST_BYTES + 1);
        if (!text) { fclose(f); return sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory", file); }
        size_t len = fread(text, 1, MAX_LIST_BYTES + 1, f);
        int bad = ferror(f);
        fclose(f);
        int code;
        if (bad) code = sa_fail(err, SA_EXIT_INPUT, "%s: read error", file);
        else if (len > MAX_LIST_BYTES) code = sa_fail(err, SA_EXIT_INPUT, "%s: list larger than 64 MiB", file);
        else code = paths_parse_list(l, text, len, NULL, file, err);
        free(text);
        return code;
    }
    struct stat st;
    if (stat(arg, &st) == 0 && S_ISDIR(st.st_mode)) return expand_dir(l, arg, err);
    if (paths_add(l, arg)) return sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory", arg);
    return SA_OK;
}
