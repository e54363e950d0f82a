/* libFuzzer target: the safetensors header and tensor table (st_parse), then every read the model loader
 * makes of it (weights_finish, weights_read with each tensor's own shape, the unused/used/non-finite
 * reports). The input is a whole .safetensors file. */
#include <stdlib.h>
#include <string.h>

#include "weights.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    weight_store ws = {0};
    sa_error err = {0};
    ws.files[0].path = strdup("fuzz.safetensors");
    ws.n_files = 1;
    if (st_parse(&ws, 0, data, size, &err) == SA_OK && weights_finish(&ws, &err) == SA_OK) {
        for (int i = 0; i < ws.n; i++) {
            const st_tensor *t = &ws.t[i];
            size_t numel = 1;
            for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
            if (numel > (1u << 24)) continue; /* cannot be a float tensor: its bytes would exceed the input */
            float *dst = malloc((numel ? numel : 1) * sizeof *dst);
            int64_t shape[ST_MAX_DIMS];
            memcpy(shape, t->shape, sizeof shape);
            char *name = strdup(t->name);
            if (dst && name) weights_read(&ws, name, t->ndim, shape, dst, &err);
            free(dst), free(name);
        }
        free(weights_unused(&ws));
        free(weights_used(&ws));
        free(weights_nonfinite(&ws));
    }
    if (err.code && !memchr(err.msg, 0, sizeof err.msg)) abort(); /* error text must be terminated */
    weights_close(&ws); /* map is NULL: the bytes belong to libFuzzer */
    return 0;
}
