/* Safetensors: an 8-byte little-endian header length, a JSON table {name: {dtype, shape, data_offsets}},
 * then the raw data. Every field is checked before any byte of data is trusted. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"
#include "weights.h"

static const struct {
    const char *name;
    int size;
} DTYPES[] = {[ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2}, [ST_F64] = {"F64", 8},
              [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4},  [ST_U8] = {"U8", 1},     [ST_BOOL] = {"BOOL", 1}};
#define N_DTYPES ((int)(sizeof DTYPES / sizeof DTYPES[0]))

#define MAX_HEADER_BYTES (100u << 20)

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { e++, man <<= 1; } while (!(man & 0x400));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | man << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* A JSON number that is a whole value in [0, 2^53). */
static int json_count(const cJSON *j, int64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double v = j->valuedouble;
    if (!(v >= 0 && v < 9007199254740992.0) || v != floor(v)) return 0;
    *out = (int64_t)v;
    return 1;
}

static int by_offset(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    return x->data < y->data ? -1 : x->data > y->data;
}

int st_parse(weight_store *ws, int file, const uint8_t *bytes, size_t size, sa_error *err) {
    const char *path = ws->files[file].path;
    if (size < 8) return sa_fail(err, SA_EXIT_MODEL, "%s: truncated: %zu bytes, no header length", path, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | bytes[i];
    if (hlen > size - 8)
        return sa_fail(err, SA_EXIT_MODEL, "%s: header length %llu runs past the end of the file (%zu bytes)", path,
                       (unsigned long long)hlen, size);
    if (hlen > MAX_HEADER_BYTES)
        return sa_fail(err, SA_EXIT_MODEL, "%s: header length %llu is over the %u-byte limit", path,
                       (unsigned long long)hlen, MAX_HEADER_BYTES);
    const uint8_t *data = bytes + 8 + hlen;
    size_t data_size = size - 8 - (size_t)hlen;
    cJSON *root = cJSON_ParseWithLength((const char *)bytes + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sa_fail(err, SA_EXIT_MODEL, "%s: header is not a JSON object", path);
    }
    int first = ws->n, code = SA_OK;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        const char *name = e->string ? e->string : "";
        if (strcmp(name, "__metadata__") == 0) continue;
        if (!cJSON_IsObject(e)) {
            code = sa_fail(err, SA_EXIT_MODEL, "%s: %s: entry is not an object", path, name);
            break;
        }
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        st_tensor t = {0};
        t.dtype = -1;
        for (int d = 0; cJSON_IsString(jd) && d < N_DTYPES; d++)
            if (strcmp(jd->valuestring, DTYPES[d].name) == 0) t.dtype = d;
        if (t.dtype < 0) {
            code = sa_fail(err, SA_EXIT_MODEL, "%s: %s: missing or unsupported dtype", path, name);
            break;
        }
        if (!cJSON_IsArray(js) || cJSON_GetArraySize(js) > ST_MAX_DIMS) {
            code = sa_fail(err, SA_EXIT_MODEL, "%s: %s: shape must be an array of at most %d sizes", path, name,
                           ST_MAX_DIMS);
            break;
        }
        uint64_t numel = 1;
        int bad = 0;
        const cJSON *jdim;
        cJSON_ArrayForEach(jdim, js) {
            int64_t d;
            if (!json_count(jdim, &d) || d > (int64_t)1 << 40) { bad = 1; break; }
            t.shape[t.ndim++] = d;
            if (d && numel > (UINT64_MAX >> 3) / (uint64_t)d) { bad = 1; break; }
            numel *= (uint64_t)d;
        }
        if (bad) {
            code = sa_fail(err, SA_EXIT_MODEL, "%s: %s: shape has a negative, fractional or huge size", path, name);
            break;
        }
        int64_t begin, end;
        if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || !json_count(cJSON_GetArrayItem(jo, 0), &begin) ||
            !json_count(cJSON_GetArrayItem(jo, 1), &end) || begin > end) {
            code = sa_fail(err, SA_EXIT_MODEL, "%s: %s: data_offsets must be two increasing non-negative offsets", path,
                           name);
            break;
        }
        if ((uint64_t)end > data_size) {
            code = sa_fail(err, SA_EXIT_MODEL, "%s: %s: data_offsets [%lld, %lld] lie outside the %zu data bytes", path,
                           name, (long long)begin, (long long)end, data_size);
            break;
        }
        t.nbytes = (size_t)(end - begin);
        if (numel * (uint64_t)DTYPES[t.dtype].size != t.nbytes) {
            code = sa_fail(err, SA_EXIT_MODEL, "%s: %s: %zu data bytes do not hold a %s tensor of %llu elements", path,
                           name, t.nbytes, DTYPES[t.dtype].name, (unsigned long long)numel);
            break;
        }
        t.data = data + begin;
        t.file = file;
        if (ws->n == ws->cap) {
            int cap = ws->cap ? 2 * ws->cap : 256;
            st_tensor *grown = realloc(ws->t, (size_t)cap * sizeof *grown);
            if (!grown) { code = sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory", path); break; }
            ws->t = grown, ws->cap = cap;
        }
        t.name = strdup(name);
        if (!t.name) { code = sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory", path); break; }
        ws->t[ws->n++] = t;
    }
    cJSON_Delete(root);
    if (code != SA_OK) return code;
    /* Tensors of one file must not share bytes. */
    int count = ws->n - first;
    st_tensor **order = malloc((size_t)(count ? count : 1) * sizeof *order);
    if (!order) return sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory", path);
    for (int i = 0; i < count; i++) order[i] = &ws->t[first + i];
    qsort(order, (size_t)count, sizeof *order, by_offset);
    for (int i = 1; i < count && code == SA_OK; i++) {
        const st_tensor *a = order[i - 1], *b = order[i];
        if (a->nbytes && b->nbytes && b->data < a->data + a->nbytes)
            code = sa_fail(err, SA_EXIT_MODEL, "%s: %s: data overlaps tensor %s", path, b->name, a->name);
    }
    free(order);
    return code;
}

int weights_open(weight_store *ws, const char *path, sa_error *err) {
    if (ws->n_files == (int)(sizeof ws->files / sizeof ws->files[0]))
        return sa_fail(err, SA_EXIT_MODEL, "%s: too many weight files (at most 16)", path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return sa_fail(err, SA_EXIT_MODEL, "%s: cannot open weights: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return sa_fail(err, SA_EXIT_MODEL, "%s: not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    void *map = NULL;
    if (size > 0) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return sa_fail(err, SA_EXIT_MODEL, "%s: cannot map: %s", path, strerror(e));
        }
    }
    close(fd);
    int file = ws->n_files++;
    ws->files[file] = (st_file){strdup(path), map, size};
    return st_parse(ws, file, map ? map : (const uint8_t *)"", size, err);
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

int weights_finish(weight_store *ws, sa_error *err) {
    if (ws->n) qsort(ws->t, (size_t)ws->n, sizeof *ws->t, by_name);
    for (int i = 1; i < ws->n; i++)
        if (strcmp(ws->t[i - 1].name, ws->t[i].name) == 0)
            return sa_fail(err, SA_EXIT_MODEL, "%s: %s: tensor name appears twice (also in %s)",
                           ws->files[ws->t[i].file].path, ws->t[i].name, ws->files[ws->t[i - 1].file].path);
    return SA_OK;
}

void weights_close(weight_store *ws) {
    for (int i = 0; i < ws->n; i++) free(ws->t[i].name);
    free(ws->t);
    for (int f = 0; f < ws->n_files; f++) {
        if (ws->files[f].map) munmap(ws->files[f].map, ws->files[f].size);
        free(ws->files[f].path);
    }
    memset(ws, 0, sizeof *ws);
}

const st_tensor *weights_find(const weight_store *ws, const char *name) {
    st_tensor key = {.name = (char *)name};
    return ws->n ? bsearch(&key, ws->t, (size_t)ws->n, sizeof *ws->t, by_name) : NULL;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++) k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* Random weights for timing and shape reports: He-scaled uniform values, BN variances near 1. */
static void synthesize(weight_store *ws, const char *name, int ndim, const int64_t *shape, float *dst) {
    size_t n = 1, fan_in = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    for (int i = 1; i < ndim; i++) fan_in *= (size_t)shape[i];
    size_t len = strlen(name);
    int is_var = len > 11 && strcmp(name + len - 11, "running_var") == 0;
    int is_gamma = len > 9 && strstr(name, "bn") && strcmp(name + len - 7, ".weight") == 0 && ndim == 1;
    float scale = ndim >= 2 ? sqrtf(6.f / (float)fan_in) : 0.1f;
    for (size_t i = 0; i < n; i++) {
        ws->seed = ws->seed * 1664525u + 1013904223u;
        float u = (float)(ws->seed >> 8) / 16777216.f * 2.f - 1.f;
        dst[i] = is_var ? 1.f + 0.1f * u : is_gamma ? 1.f + 0.1f * u : scale * u;
    }
}

#define WIDEN_CHUNK ((size_t)1 << 14)

/* F16C's conversion is exact, subnormals included, so it gives f16_to_f32's values (a signalling NaN
 * comes out quiet, still a NaN). Returns how many values it converted: a multiple of 8. */
static __attribute__((target("avx,f16c"))) size_t widen_f16c(const uint8_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
    return i;
}

/* n values of dtype at src (no alignment guarantee) to floats. */
static void widen(int dtype, const uint8_t *src, float *dst, size_t n) {
    size_t i = 0;
    if (dtype == ST_F32) {
        memcpy(dst, src, n * 4);
        return;
    }
    /* every CPU with AVX2 has F16C (and clang 14 cannot test for F16C by name) */
    if (dtype == ST_F16 && __builtin_cpu_supports("avx2")) i = widen_f16c(src, dst, n);
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = dtype == ST_F16 ? f16_to_f32(h) : bf16_to_f32(h);
    }
}

static size_t count_nonfinite(const float *x, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], 4);
        bad += (bits & 0x7f800000u) == 0x7f800000u;
    }
    return bad;
}

int weights_read(weight_store *ws, const char *name, int ndim, const int64_t *shape, float *dst, sa_error *err) {
    if (ws->synthetic) {
        synthesize(ws, name, ndim, shape, dst);
        if (ws->n == ws->cap) {
            int cap = ws->cap ? 2 * ws->cap : 256;
            st_tensor *grown = realloc(ws->t, (size_t)cap * sizeof *grown);
            if (!grown) return sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
            ws->t = grown, ws->cap = cap;
        }
        st_tensor t = {.name = strdup(name), .dtype = ST_F32, .ndim = ndim, .used = 1};
        for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
        ws->t[ws->n++] = t;
        return SA_OK;
    }
    st_tensor *t = (st_tensor *)weights_find(ws, name);
    const char *where = ws->n_files == 1 ? ws->files[0].path : "weights";
    if (!t) return sa_fail(err, SA_EXIT_MODEL, "%s: %s: tensor missing", where, name);
    where = ws->files[t->file].path;
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char want[128], got[128];
        shape_str(want, sizeof want, ndim, shape);
        shape_str(got, sizeof got, t->ndim, t->shape);
        return sa_fail(err, SA_EXIT_MODEL, "%s: %s: shape %s, expected %s", where, name, got, want);
    }
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return sa_fail(err, SA_EXIT_MODEL, "%s: %s: dtype %s, expected F32, F16 or BF16", where, name,
                       DTYPES[t->dtype].name);
    size_t n = t->nbytes / (size_t)DTYPES[t->dtype].size, nonfinite = 0;
    /* Chunks in parallel: load is part of every predict, and a 12 M-value backbone widened and page-faulted
     * on one core was a third of a one-image run. Each value lands in the same place for any thread count. */
#pragma omp parallel for schedule(static) reduction(+ : nonfinite) if (n >= WIDEN_CHUNK * 4)
    for (size_t c0 = 0; c0 < n; c0 += WIDEN_CHUNK) {
        size_t cn = n - c0 < WIDEN_CHUNK ? n - c0 : WIDEN_CHUNK;
        widen(t->dtype, t->data + c0 * (size_t)DTYPES[t->dtype].size, dst + c0, cn);
        nonfinite += count_nonfinite(dst + c0, cn);
    }
    t->nonfinite = nonfinite; /* reported, not refused: a NaN in an unused channel is harmless */
    t->used = 1;
    return SA_OK;
}

static int ignorable(const char *name) {
    size_t n = strlen(name);
    const char *nbt = "num_batches_tracked";
    return strncmp(name, "auxiliary_head.", 15) == 0 || (n >= strlen(nbt) && strcmp(name + n - strlen(nbt), nbt) == 0);
}

/* At most this many names are listed; the rest are counted, so the warning stays one readable line. */
#define UNUSED_LISTED 8

char *weights_unused(const weight_store *ws) {
    size_t len = 64;
    int total = 0;
    for (int i = 0; i < ws->n; i++)
        if (!ws->t[i].used && !ignorable(ws->t[i].name) && total++ < UNUSED_LISTED) len += strlen(ws->t[i].name) + 2;
    if (!total) return NULL;
    char *s = malloc(len);
    if (!s) return NULL;
    size_t k = (size_t)snprintf(s, len, "%d tensor%s: ", total, total == 1 ? "" : "s");
    int listed = 0;
    for (int i = 0; i < ws->n && listed < UNUSED_LISTED; i++) {
        if (ws->t[i].used || ignorable(ws->t[i].name)) continue;
        k += (size_t)snprintf(s + k, len - k, "%s%s", listed++ ? ", " : "", ws->t[i].name);
    }
    if (total > listed) snprintf(s + k, len - k, " and %d more", total - listed);
    return s;
}

char *weights_nonfinite(const weight_store *ws) {
    const st_tensor *first = NULL;
    int others = 0;
    for (int i = 0; i < ws->n; i++) {
        if (!ws->t[i].used || !ws->t[i].nonfinite) continue;
        if (!first) first = &ws->t[i];
        else others++;
    }
    if (!first) return NULL;
    const char *file = first->file < ws->n_files ? ws->files[first->file].path : "weights";
    size_t len = strlen(file) + strlen(first->name) + 160;
    char *s = malloc(len);
    if (!s) return NULL;
    size_t numel = first->nbytes / (size_t)DTYPES[first->dtype].size;
    int k = snprintf(s, len, "%s: %s: %zu of %zu values are NaN or infinite", file, first->name, first->nonfinite, numel);
    if (others) snprintf(s + k, len - (size_t)k, " (and %d more tensor%s)", others, others == 1 ? "" : "s");
    return s;
}

int st_write_f32(const char *path, const st_out *tensors, int n, sa_error *err) {
    cJSON *hdr = cJSON_CreateObject();
    size_t off = 0;
    for (int i = 0; hdr && i < n; i++) {
        size_t numel = 1;
        double shape[ST_MAX_DIMS];
        for (int d = 0; d < tensors[i].ndim; d++) numel *= (size_t)tensors[i].shape[d], shape[d] = (double)tensors[i].shape[d];
        cJSON *e = cJSON_AddObjectToObject(hdr, tensors[i].name);
        cJSON_AddStringToObject(e, "dtype", "F32");
        cJSON_AddItemToObject(e, "shape", cJSON_CreateDoubleArray(shape, tensors[i].ndim));
        double offs[2] = {(double)off, (double)(off + numel * 4)};
        cJSON_AddItemToObject(e, "data_offsets", cJSON_CreateDoubleArray(offs, 2));
        off += numel * 4;
    }
    char *json = hdr ? cJSON_PrintUnformatted(hdr) : NULL;
    cJSON_Delete(hdr);
    if (!json) return sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory", path);
    size_t hlen = strlen(json), padded = (hlen + 7) / 8 * 8;
    atomic_out o;
    int code = atomic_open(&o, path, err);
    if (code) { free(json); return code; }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    fwrite(len8, 1, 8, o.f);
    fwrite(json, 1, hlen, o.f);
    for (size_t i = hlen; i < padded; i++) fputc(' ', o.f);
    free(json);
    for (int i = 0; i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < tensors[i].ndim; d++) numel *= (size_t)tensors[i].shape[d];
        fwrite(tensors[i].data, 4, numel, o.f); /* little-endian host assumed, as the format is */
    }
    return atomic_commit(&o, err);
}

char *weights_used(const weight_store *ws) {
    size_t cap = 1, k = 0;
    for (int i = 0; i < ws->n; i++) cap += strlen(ws->t[i].name) + 32 + 24 * (size_t)ws->t[i].ndim;
    char *s = malloc(cap);
    if (!s) return NULL;
    s[0] = 0;
    for (int i = 0; i < ws->n; i++) {
        const st_tensor *t = &ws->t[i];
        if (!t->used) continue;
        char shape[256];
        shape_str(shape, sizeof shape, t->ndim, t->shape);
        k += (size_t)snprintf(s + k, cap - k, "%s %s %s\n", t->name, DTYPES[t->dtype].name, shape);
    }
    return s;
}
