#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int sa_fail(sa_error *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

int atomic_open(atomic_out *o, const char *path, sa_error *err) {
    memset(o, 0, sizeof *o);
    size_t n = strlen(path) + 32;
    o->tmp = malloc(n);
    o->path = strdup(path);
    if (!o->tmp || !o->path) {
        atomic_abort(o);
        return sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory", path);
    }
    snprintf(o->tmp, n, "%s.tmp%ld", path, (long)getpid());
    o->f = fopen(o->tmp, "wb");
    if (!o->f) {
        int e = errno;
        atomic_abort(o);
        return sa_fail(err, SA_EXIT_OUTPUT, "%s: cannot write: %s", path, strerror(e));
    }
    return SA_OK;
}

int atomic_commit(atomic_out *o, sa_error *err) {
    int bad = ferror(o->f);
    int e = bad && errno ? errno : EIO;
    if (fflush(o->f) != 0) bad = 1, e = errno;
    /* On disk before it gets its name: a crash after the rename leaves the whole file, not an empty one. */
    if (!bad && fsync(fileno(o->f)) != 0 && errno != EINVAL && errno != EROFS) bad = 1, e = errno;
    if (fclose(o->f) != 0) bad = 1, e = errno;
    o->f = NULL;
    if (bad) {
        int code = sa_fail(err, SA_EXIT_OUTPUT, "%s: write failed: %s", o->path, strerror(e));
        atomic_abort(o);
        return code;
    }
    if (rename(o->tmp, o->path) != 0) {
        e = errno;
        int code = sa_fail(err, SA_EXIT_OUTPUT, "%s: cannot rename temporary file: %s", o->path, strerror(e));
        atomic_abort(o);
        return code;
    }
    free(o->tmp);
    free(o->path);
    memset(o, 0, sizeof *o);
    return SA_OK;
}

void atomic_abort(atomic_out *o) {
    if (o->f) fclose(o->f);
    if (o->tmp) remove(o->tmp);
    free(o->tmp);
    free(o->path);
    memset(o, 0, sizeof *o);
}

char *path_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

char *path_join(const char *dir, const char *rel) {
    if (rel[0] == '/' || !dir || !dir[0]) return strdup(rel);
    size_t n = strlen(dir) + strlen(rel) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", rel);
    return p;
}

void json_write_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}
