/* Safetensors weight files: mapped, validated, looked up by mmseg state_dict name. */
#ifndef SA_WEIGHTS_H
#define SA_WEIGHTS_H
#include <stddef.h>
#include <stdint.h>

#include "segattn.h"

enum { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_U8, ST_BOOL };

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    int dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const uint8_t *data;
    size_t nbytes;
    int file;   /* index into weight_store.files */
    int used;
    size_t nonfinite; /* NaN or infinite values seen by weights_read */
} st_tensor;

typedef struct {
    char *path;
    void *map;
    size_t size;
} st_file;

typedef struct {
    st_file files[16];
    int n_files;
    st_tensor *t;   /* sorted by name after weights_finish */
    int n, cap;
    int synthetic;  /* no files: every read yields deterministic random values (info, bench) */
    unsigned seed;
} weight_store;

int weights_open(weight_store *ws, const char *path, sa_error *err);
/* Sorts the table and refuses a name present twice (within or across files). */
int weights_finish(weight_store *ws, sa_error *err);
void weights_close(weight_store *ws);
const st_tensor *weights_find(const weight_store *ws, const char *name);
/* Reads tensor `name`, checking that it exists, has exactly the given shape and a float dtype, widened
 * to F32 into dst (numel floats). Marks it used. */
int weights_read(weight_store *ws, const char *name, int ndim, const int64_t *shape, float *dst, sa_error *err);
/* Comma-separated names nobody read (skipping auxiliary_head.* and num_batches_tracked); malloc'd, or NULL. */
char *weights_unused(const weight_store *ws);
/* One line naming the first tensor read that holds NaN or infinite values ("FILE: NAME: N of M values are
 * NaN or infinite", plus how many other tensors do); malloc'd, or NULL when every value read is finite. */
char *weights_nonfinite(const weight_store *ws);
/* Newline-separated "name dtype [shape]" of every tensor read; malloc'd. */
char *weights_used(const weight_store *ws);

/* Parses a safetensors header already in memory (the fuzz target calls this directly). */
int st_parse(weight_store *ws, int file, const uint8_t *bytes, size_t size, sa_error *err);

/* Writes one or more F32 tensors as a safetensors file (temporary name, then rename). */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const float *data;
} st_out;
int st_write_f32(const char *path, const st_out *tensors, int n, sa_error *err);

float f16_to_f32(uint16_t h);
float bf16_to_f32(uint16_t h);

#endif
