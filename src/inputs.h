/* Turning IMAGE, DIR and @LIST arguments into one ordered list of image paths. */
#ifndef SA_INPUTS_H
#define SA_INPUTS_H
#include "segattn.h"

typedef struct {
    char **path;
    int n, cap;
} path_list;

int paths_add(path_list *l, const char *path);
void paths_free(path_list *l);
/* Lines of a list file: one path per line, blank lines and lines starting with '#' skipped, surrounding
 * spaces and a CR trimmed. Relative paths are taken relative to `base_dir` (NULL: as written). */
int paths_parse_list(path_list *l, const char *text, size_t len, const char *base_dir, const char *where, sa_error *err);
/* Adds one argument: a file, a directory (its images, sorted by name) or @LIST. */
int paths_expand(path_list *l, const char *arg, sa_error *err);
int is_image_name(const char *name);
/* The file name without directory and extension, malloc'd. */
char *path_stem(const char *path);

#endif
