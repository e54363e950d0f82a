/* Small shared helpers: located errors and all-or-nothing file output. */
#ifndef SA_UTIL_H
#define SA_UTIL_H
#include <stdio.h>

#include "segattn.h"

/* An output file is written under a temporary name in the same directory and renamed on commit, so a
 * reader never sees half a file and a failed write leaves nothing. */
typedef struct {
    FILE *f;
    char *tmp;
    char *path;
} atomic_out;

int atomic_open(atomic_out *o, const char *path, sa_error *err);
int atomic_commit(atomic_out *o, sa_error *err);
void atomic_abort(atomic_out *o);

/* Writes s as a JSON string literal (quotes, backslashes and control characters escaped). */
void json_write_string(FILE *f, const char *s);

/* The directory part of a path ("." when none); malloc'd. */
char *path_dirname(const char *path);
/* dir + "/" + rel unless rel is absolute; malloc'd. */
char *path_join(const char *dir, const char *rel);

#endif
