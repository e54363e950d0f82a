/* libFuzzer target: the @LIST reader (paths_parse_list): lines, comments, trimming, NULs, long lines. */
#include <stdlib.h>
#include <string.h>

#include "inputs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    path_list l = {0};
    sa_error err = {0};
    /* The first byte picks whether relative paths are joined to a base directory. */
    const char *base = size && (data[0] & 1) ? "base/dir" : NULL;
    if (paths_parse_list(&l, (const char *)data, size, base, "fuzz.lst", &err) == SA_OK) {
        for (int i = 0; i < l.n; i++) {
            size_t n = strlen(l.path[i]);
            if (n == 0 || l.path[i][0] == '#' || l.path[i][n - 1] == ' ' || l.path[i][n - 1] == '\r') abort();
        }
    }
    paths_free(&l);
    return 0;
}
