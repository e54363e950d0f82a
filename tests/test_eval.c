/* Evaluation: metric arithmetic on hand-made cases, confusion files, the palette PNG reader (well-formed
 * and hostile), and end to end: CamVid / Cityscapes / VOC trees built from CamVid images checked against
 * numpy, shard + merge under GNU parallel equal to one process, slide and TTA against a numpy rebuild,
 * and predict's resume and bad-image behaviour. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <signal.h>
#include <stb/stb_image_write.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "datasets.h"
#include "infer.h"
#include "metrics.h"
#include "png_index.h"
#include "testutil.h"

/* stb_image_write's deflate (exported by libstb, declared only inside the implementation). */
unsigned char *stbi_zlib_compress(unsigned char *data, int data_len, int *out_len, int quality);

/* ---- metrics ----------------------------------------------------------------------------------------- */

START_TEST(metrics_by_hand) {
    sa_confusion c;
    sa_error err = {0};
    static const char *const names[] = {"a", "b", "c", "d"};
    ck_assert_int_eq(confusion_init(&c, 4, names, "hand", &err), 0);
    /* gt:   0 0 0 1 1 2 255 9  ; pred: 0 0 1 1 0 1 3 2
     * class 0: I=2 P=3 L=3 ; class 1: I=1 P=3 L=2 ; class 2: I=0 P=1 (at gt 9) L=1 ; class 3: nothing
     * (the prediction at the ignored pixel is dropped) */
    uint8_t gt[] = {0, 0, 0, 1, 1, 2, 255, 9}, pred[] = {0, 0, 1, 1, 0, 1, 3, 2};
    confusion_add(&c, gt, pred, 8, 255);
    sa_metrics mt;
    ck_assert_int_eq(metrics_compute(&c, &mt, &err), 0);
    ck_assert_double_eq_tol(mt.iou[0], 2.0 / 4, 1e-15);
    ck_assert_double_eq_tol(mt.iou[1], 1.0 / 4, 1e-15);
    ck_assert_double_eq_tol(mt.iou[2], 0.0 / 2, 1e-15);
    ck_assert(isnan(mt.iou[3]) && isnan(mt.acc[3]));
    ck_assert_double_eq_tol(mt.acc[0], 2.0 / 3, 1e-15);
    ck_assert_double_eq_tol(mt.acc[1], 1.0 / 2, 1e-15);
    ck_assert_double_eq_tol(mt.acc[2], 0.0, 1e-15);
    ck_assert_double_eq_tol(mt.aacc, 3.0 / 6, 1e-15);
    ck_assert_double_eq_tol(mt.miou, (0.5 + 0.25 + 0) / 3, 1e-15);
    ck_assert_double_eq_tol(mt.macc, (2.0 / 3 + 0.5 + 0) / 3, 1e-15);
    ck_assert_int_eq(mt.n_iou, 3);
    ck_assert_int_eq(mt.n_acc, 3);
    metrics_free(&mt);

    /* A class predicted but absent from the ground truth: IoU 0 counts, Acc is left out. */
    uint8_t gt2[] = {0, 0}, pred2[] = {3, 0};
    confusion_add(&c, gt2, pred2, 2, 255);
    ck_assert_int_eq(metrics_compute(&c, &mt, &err), 0);
    ck_assert_double_eq(mt.iou[3], 0);
    ck_assert(isnan(mt.acc[3]));
    ck_assert_int_eq(mt.n_iou, 4);
    ck_assert_int_eq(mt.n_acc, 3);
    ck_assert_int_eq(c.images, 2);
    metrics_free(&mt);
    confusion_free(&c);
}
END_TEST

START_TEST(confusion_files) {
    sa_confusion a, b, back;
    sa_error err = {0};
    static const char *const names[] = {"x \"quoted\"", "y"};
    ck_assert_int_eq(confusion_init(&a, 2, names, "set", &err), 0);
    ck_assert_int_eq(confusion_init(&b, 2, names, "set", &err), 0);
    uint8_t g1[] = {0, 1, 1, 5}, p1[] = {0, 1, 0, 1}, g2[] = {1, 1, 0}, p2[] = {1, 1, 1};
    confusion_add(&a, g1, p1, 4, 255);
    confusion_add(&b, g2, p2, 3, 255);
    a.m[1] = 9007199254740991ull; /* the largest count a JSON double holds exactly */
    char path[128];
    snprintf(path, sizeof path, "/tmp/segattn_conf_%d.json", (int)getpid());
    ck_assert_int_eq(confusion_save(&a, path, &err), 0);
    ck_assert_int_eq(confusion_load(&back, path, &err), 0);
    ck_assert_int_eq(back.k, 2);
    ck_assert_str_eq(back.names[0], names[0]);
    ck_assert_str_eq(back.dataset, "set");
    for (int i = 0; i < 4; i++) ck_assert(back.m[i] == a.m[i]);
    ck_assert(back.pred_other[1] == 1);
    ck_assert_int_eq(confusion_merge(&back, &b, "b", &err), 0);
    ck_assert(back.m[3] == 1 + 2 && back.m[2] == 1 + 0 && back.m[1] == 9007199254740991ull + 1);
    ck_assert_int_eq(back.images, 2);
    remove(path);
    confusion_free(&back);

    static const char *const other[] = {"x", "z"};
    sa_confusion c;
    ck_assert_int_eq(confusion_init(&c, 2, other, "set", &err), 0);
    ck_assert_int_eq(confusion_merge(&a, &c, "c", &err), SA_EXIT_INPUT);
    confusion_free(&c);
    confusion_free(&a), confusion_free(&b);

    static const char *const bad[] = {
        "",
        "[]",
        "{\"format\": \"other\"}",
        "{\"format\": \"segattn-confusion-1\", \"num_classes\": 0, \"classes\": [], \"images\": 0, \"matrix\": []}",
        "{\"format\": \"segattn-confusion-1\", \"num_classes\": 1, \"classes\": [\"a\"], \"images\": 1, \"matrix\": [[-1]]}",
        "{\"format\": \"segattn-confusion-1\", \"num_classes\": 1, \"classes\": [\"a\"], \"images\": 1, \"matrix\": [[1.5]]}",
        "{\"format\": \"segattn-confusion-1\", \"num_classes\": 1, \"classes\": [\"a\"], \"images\": 1, \"matrix\": [[1e300]]}",
        "{\"format\": \"segattn-confusion-1\", \"num_classes\": 2, \"classes\": [\"a\", \"b\"], \"images\": 1, \"matrix\": [[1, 2]]}",
        "{\"format\": \"segattn-confusion-1\", \"num_classes\": 1, \"classes\": [7], \"images\": 1, \"matrix\": [[1]]}",
        "{\"format\": \"segattn-confusion-1\", \"num_classes\": 1, \"classes\": [\"a\"], \"images\": 1, \"matrix\": [[1]], "
        "\"shard\": [3, 2]}",
        "{\"format\": \"segattn-confusion-1\", \"num_classes\": 1000, \"classes\": [\"a\"], \"images\": 1, \"matrix\": [[1]]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sa_confusion x;
        ck_assert_msg(confusion_parse(&x, bad[i], strlen(bad[i]), "t", &err) == SA_EXIT_INPUT, "accepted: %s", bad[i]);
    }
    const char *good = "{\"format\": \"segattn-confusion-1\", \"num_classes\": 1, \"classes\": [\"a\"], \"images\": 3, "
                       "\"matrix\": [[4]], \"shard\": [2, 2]}";
    sa_confusion x;
    ck_assert_int_eq(confusion_parse(&x, good, strlen(good), "t", &err), 0);
    ck_assert(x.m[0] == 4 && x.images == 3 && x.shard_k == 2 && x.shard_n == 2 && !x.dataset);
    confusion_free(&x);
}
END_TEST

/* ---- the palette PNG reader --------------------------------------------------------------------------- */

typedef struct {
    uint8_t *d;
    size_t n, cap;
} buf;

static void put(buf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->d = realloc(b->d, b->cap);
    }
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void put32(buf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(b, x, 4);
}

static uint32_t crc(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

static void chunk(buf *b, const char *type, const void *data, size_t n) {
    put32(b, (uint32_t)n);
    size_t at = b->n;
    put(b, type, 4);
    if (n) put(b, data, n);
    put32(b, crc(b->d + at, n + 4));
}

/* Fixes every chunk's CRC after a mutation (so that fuzzing reaches the inflater and the filters). */
static void fix_crcs(buf *b) {
    size_t pos = 8;
    while (pos + 12 <= b->n) {
        uint32_t n = (uint32_t)b->d[pos] << 24 | (uint32_t)b->d[pos + 1] << 16 | (uint32_t)b->d[pos + 2] << 8 | b->d[pos + 3];
        if (n > b->n - pos - 12) break;
        uint32_t c = crc(b->d + pos + 4, n + 4);
        uint8_t *q = b->d + pos + 8 + n;
        q[0] = (uint8_t)(c >> 24), q[1] = (uint8_t)(c >> 16), q[2] = (uint8_t)(c >> 8), q[3] = (uint8_t)c;
        pos += n + 12;
    }
}

/* A PNG of colour type `ctype`, bit depth `depth`, rows filtered with filter (y + f0) % 5; raw_extra
 * bytes of junk appended to the image data before compression. */
static buf make_png(int w, int h, int depth, int ctype, const uint8_t *idx, int f0, int interlace, int raw_extra) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    buf b = {0};
    put(&b, sig, 8);
    uint8_t ihdr[13] = {(uint8_t)(w >> 24), (uint8_t)(w >> 16), (uint8_t)(w >> 8), (uint8_t)w,
                        (uint8_t)(h >> 24), (uint8_t)(h >> 16), (uint8_t)(h >> 8), (uint8_t)h,
                        (uint8_t)depth, (uint8_t)ctype, 0, 0, (uint8_t)interlace};
    chunk(&b, "IHDR", ihdr, 13);
    chunk(&b, "tEXt", "Comment\0ancillary", 17);
    if (ctype == 3) {
        uint8_t pal[768];
        for (int i = 0; i < 768; i++) pal[i] = (uint8_t)(i * 7);
        chunk(&b, "PLTE", pal, 3u << depth);
    }
    size_t stride = ((size_t)w * depth + 7) / 8, raw_n = (stride + 1) * h + raw_extra;
    uint8_t *raw = calloc(raw_n, 1), *prev = calloc(stride, 1), *row = malloc(stride);
    for (int y = 0; y < h; y++) {
        memset(row, 0, stride);
        for (int x = 0; x < w; x++) {
            int per = 8 / depth, shift = 8 - depth * (x % per + 1);
            row[x / per] |= (uint8_t)(idx[y * w + x] << shift);
        }
        int f = (y + f0) % 5;
        uint8_t *o = raw + (size_t)y * (stride + 1);
        o[0] = (uint8_t)f;
        for (size_t x = 0; x < stride; x++) {
            int a = x ? row[x - 1] : 0, up = prev[x], c = x ? prev[x - 1] : 0, pr;
            int p = a + up - c, pa = abs(p - a), pb = abs(p - up), pc = abs(p - c);
            pr = pa <= pb && pa <= pc ? a : pb <= pc ? up : c;
            int pred = f == 0 ? 0 : f == 1 ? a : f == 2 ? up : f == 3 ? (a + up) / 2 : pr;
            o[1 + x] = (uint8_t)(row[x] - pred);
        }
        memcpy(prev, row, stride);
    }
    int zn;
    unsigned char *z = stbi_zlib_compress(raw, (int)raw_n, &zn, 8);
    /* split the data over two IDAT chunks */
    chunk(&b, "IDAT", z, (size_t)zn / 2);
    chunk(&b, "IDAT", z + zn / 2, (size_t)zn - (size_t)zn / 2);
    chunk(&b, "IEND", NULL, 0);
    free(z), free(raw), free(prev), free(row);
    return b;
}

START_TEST(png_palette_depths_and_filters) {
    const int w = 37, h = 11;
    uint8_t idx[37 * 11];
    unsigned s = 7;
    for (int depth = 1; depth <= 8; depth *= 2) {
        for (int ctype = 0; ctype <= 3; ctype += 3) {
            for (int i = 0; i < w * h; i++) idx[i] = (uint8_t)(((unsigned)(test_rand(&s) * 1000 + 1000)) % (1u << depth));
            for (int f0 = 0; f0 < 5; f0++) {
                buf b = make_png(w, h, depth, ctype, idx, f0, 0, 0);
                sa_error err = {0};
                int gw, gh;
                uint8_t *out;
                ck_assert_msg(png_index_decode(b.d, b.n, 0, "t", &gw, &gh, &out, &err) == 0, "depth %d type %d: %s", depth,
                              ctype, err.msg);
                ck_assert_int_eq(gw, w);
                ck_assert_int_eq(gh, h);
                ck_assert_msg(memcmp(out, idx, sizeof idx) == 0, "depth %d type %d filter %d: wrong values", depth, ctype, f0);
                free(out);
                free(b.d);
            }
        }
    }
}
END_TEST

static int decode_fails(buf b, int64_t max_pixels, const char *expect) {
    sa_error err = {0};
    int w, h;
    uint8_t *out = (uint8_t *)1;
    int code = png_index_decode(b.d, b.n, max_pixels, "t", &w, &h, &out, &err);
    int ok = code == SA_EXIT_INPUT && out == NULL && (!expect || strstr(err.msg, expect));
    if (!ok) fprintf(stderr, "png: expected failure '%s', got %d '%s'\n", expect ? expect : "", code, err.msg);
    free(b.d);
    return ok;
}

START_TEST(png_hostile) {
    uint8_t idx[16 * 16] = {0};
    for (int i = 0; i < 256; i++) idx[i] = (uint8_t)i;
    buf good = make_png(16, 16, 8, 3, idx, 0, 0, 0);
    /* every truncation fails cleanly */
    for (size_t n = 0; n < good.n; n++) {
        buf t = {malloc(n + 1), n, n + 1};
        memcpy(t.d, good.d, n);
        ck_assert_msg(decode_fails(t, 0, NULL), "truncated to %zu bytes", n);
    }
    buf t = {malloc(good.n), good.n, good.n};
    memcpy(t.d, good.d, good.n);
    t.d[40] ^= 1; /* inside a chunk, CRC not fixed */
    ck_assert(decode_fails(t, 0, "CRC"));
    ck_assert(decode_fails(make_png(16, 16, 8, 3, idx, 0, 0, 0), 100, "limit"));
    ck_assert(decode_fails(make_png(16, 16, 8, 3, idx, 0, 1, 0), 0, "interlaced"));
    ck_assert(decode_fails(make_png(16, 16, 8, 2, idx, 0, 0, 0), 0, "colour type"));
    buf d16 = make_png(16, 16, 8, 0, idx, 0, 0, 0);
    d16.d[8 + 8 + 8] = 16; /* IHDR bit depth */
    fix_crcs(&d16);
    ck_assert(decode_fails(d16, 0, "bit depth"));
    ck_assert(decode_fails(make_png(16, 16, 8, 3, idx, 0, 0, 1 << 20), 0, NULL)); /* inflates past the image */
    /* an unknown filter type */
    buf f = make_png(4, 2, 8, 0, idx, 0, 0, 0);
    {
        /* rebuild with filter 7 on row 1: decode the raw, patch, recompress */
        free(f.d);
        static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
        buf b = {0};
        put(&b, sig, 8);
        uint8_t ihdr[13] = {0, 0, 0, 4, 0, 0, 0, 2, 8, 0, 0, 0, 0};
        chunk(&b, "IHDR", ihdr, 13);
        uint8_t raw[10] = {0, 1, 2, 3, 4, 7, 1, 2, 3, 4};
        int zn;
        unsigned char *z = stbi_zlib_compress(raw, 10, &zn, 8);
        chunk(&b, "IDAT", z, (size_t)zn);
        chunk(&b, "IEND", NULL, 0);
        free(z);
        ck_assert(decode_fails(b, 0, "filter"));
    }
    /* huge dimensions in the header are refused before any allocation */
    {
        static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
        buf b = {0};
        put(&b, sig, 8);
        uint8_t ihdr[13] = {0x7f, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 8, 3, 0, 0, 0};
        chunk(&b, "IHDR", ihdr, 13);
        chunk(&b, "IEND", NULL, 0);
        ck_assert(decode_fails(b, 0, "limit"));
    }
    /* mutations with CRCs repaired: never a crash, and a success always has the right size */
    unsigned s = 99;
    for (int it = 0; it < 3000; it++) {
        buf m = {malloc(good.n), good.n, good.n};
        memcpy(m.d, good.d, good.n);
        int flips = 1 + it % 4;
        for (int k = 0; k < flips; k++) {
            size_t at = 8 + (size_t)((test_rand(&s) + 1) / 2 * (float)(good.n - 8));
            if (at >= good.n) at = good.n - 1;
            m.d[at] = (uint8_t)(test_rand(&s) * 255);
        }
        fix_crcs(&m);
        sa_error err = {0};
        int w, h;
        uint8_t *out = NULL;
        if (png_index_decode(m.d, m.n, 1 << 20, "fuzz", &w, &h, &out, &err) == 0) {
            ck_assert(out && w > 0 && h > 0 && (int64_t)w * h <= 1 << 20);
            free(out);
        }
        free(m.d);
    }
    free(good.d);
}
END_TEST

/* ---- end to end ----------------------------------------------------------------------------------------- */

static char root[256]; /* /tmp/segattn_eval_<pid> */
static const char *model = "-c configs/camvid_r18-d8_fcn.json";
static int have_python;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return run_status(cmd);
}

/* The CamVid val split: $SEGATTN_CAMVID, or the shared data beside the checkout. */
static const char *camvid_val(void) {
    static const char *const where[] = {"../shared/data/camvid/val", "/work/shared/data/camvid/val"};
    const char *env = getenv("SEGATTN_CAMVID");
    if (env) return env;
    for (int i = 0; i < 2; i++) {
        char p[300];
        snprintf(p, sizeof p, "%s/labels", where[i]);
        if (access(p, R_OK) == 0) return where[i];
    }
    return NULL;
}

static void trees_setup(void) {
    snprintf(root, sizeof root, "/tmp/segattn_eval_%d", (int)getpid());
    const char *val = camvid_val();
    have_python = val && run_status("/usr/bin/python3 -c 'import numpy, PIL' 2>/dev/null") == 0;
    if (!have_python) {
        fprintf(stderr, "test_eval: no CamVid val split or no python3 with numpy and PIL: end-to-end tests skipped\n");
        return;
    }
    if (sh("rm -rf %s && mkdir -p %s && /usr/bin/python3 tests/gen/eval_trees.py build %s %s 4 160 120", root, root, val,
           root) != 0)
        have_python = 0;
}

static void trees_teardown(void) { sh("rm -rf %s", root); }

static cJSON *read_json(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char text[1 << 20];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    return cJSON_Parse(text);
}

static double jnum(const cJSON *o, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b) x = cJSON_GetObjectItemCaseSensitive(x, b);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

START_TEST(layouts_agree_and_match_numpy) {
    if (!have_python) return;
    const char *sets[3][2] = {{"camvid", "camvid"}, {"cityscapes", "cityscapes"}, {"voc", "voc"}};
    cJSON *res[3];
    for (int d = 0; d < 3; d++) {
        ck_assert_int_eq(sh("./segattn eval -q -t 2 %s --dataset %s --root %s/%s --json %s/m_%s.json > %s/m_%s.txt", model,
                            sets[d][0], root, sets[d][1], root, sets[d][0], root, sets[d][0]),
                         0);
        char p[512];
        snprintf(p, sizeof p, "%s/m_%s.json", root, sets[d][0]);
        ck_assert_msg((res[d] = read_json(p)) != NULL, "%s", p);
        ck_assert_int_eq((int)jnum(res[d], "images", NULL), 4);
    }
    /* the same pixels and classes in all three layouts: identical fractions for the 11 CamVid classes */
    for (int d = 1; d < 3; d++) {
        ck_assert_double_eq(jnum(res[0], "fractions", "mIoU"), jnum(res[d], "fractions", "mIoU"));
        ck_assert_double_eq(jnum(res[0], "fractions", "aAcc"), jnum(res[d], "fractions", "aAcc"));
        const cJSON *c0 = cJSON_GetObjectItemCaseSensitive(res[0], "classes"), *cd = cJSON_GetObjectItemCaseSensitive(res[d], "classes");
        ck_assert_int_eq(cJSON_GetArraySize(cd), d == 1 ? 19 : 21);
        for (int k = 0; k < 11; k++) {
            const cJSON *a = cJSON_GetArrayItem(c0, k), *b = cJSON_GetArrayItem(cd, k);
            ck_assert_double_eq(jnum(a, "pixels", NULL), jnum(b, "pixels", NULL));
            const cJSON *ia = cJSON_GetObjectItemCaseSensitive(a, "IoU"), *ib = cJSON_GetObjectItemCaseSensitive(b, "IoU");
            ck_assert(cJSON_IsNull(ia) == cJSON_IsNull(ib));
            if (!cJSON_IsNull(ia)) ck_assert_double_eq(ia->valuedouble, ib->valuedouble);
        }
        for (int k = 11; k < cJSON_GetArraySize(cd); k++) /* absent from both: NaN, out of the means */
            ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cd, k), "IoU")));
    }
    for (int d = 0; d < 3; d++) cJSON_Delete(res[d]);
    /* numpy from predict's index maps */
    ck_assert_int_eq(sh("./segattn predict -q -t 2 %s --format index -o %s/pred %s/camvid/images", model, root, root), 0);
    ck_assert_int_eq(sh("/usr/bin/python3 tests/gen/eval_trees.py check %s/pred %s/camvid/labels 11 11 %s/m_camvid.json",
                        root, root, root),
                     0);
    /* the printed summary */
    ck_assert_int_eq(sh("grep -q '^aAcc: [0-9.]*  mIoU: [0-9.]*  mAcc: [0-9.]*  (11 of 11 classes in mIoU)' %s/m_camvid.txt", root), 0);
}
END_TEST

START_TEST(shard_merge_with_parallel) {
    if (!have_python) return;
    if (run_status("parallel --version > /dev/null 2>&1") != 0) {
        fprintf(stderr, "test_eval: GNU parallel missing, shard test skipped\n");
        return;
    }
    ck_assert_int_eq(sh("./segattn eval -q -t 1 %s --dataset voc --root %s/voc --save-confusion %s/all.json --json %s/all_m.json > /dev/null",
                        model, root, root, root),
                     0);
    ck_assert_int_eq(sh("parallel -j 3 ./segattn eval -q -t 1 %s --dataset voc --root %s/voc --shard {}/3 "
                        "--save-confusion %s/part{}.json '>' /dev/null ::: 1 2 3",
                        model, root, root),
                     0);
    ck_assert_int_eq(sh("./segattn eval -q --merge %s/part3.json %s/part1.json %s/part2.json --save-confusion %s/merged.json "
                        "--json %s/merged_m.json > %s/merged.txt",
                        root, root, root, root, root, root),
                     0);
    ck_assert_int_eq(sh("cmp -s %s/all.json %s/merged.json", root, root), 0);
    /* the metrics files differ only in the config field */
    ck_assert_int_eq(sh("sed 's/, \"config\": \"[^\"]*\"//' %s/all_m.json > %s/a.txt && "
                        "sed 's/, \"config\": \"[^\"]*\"//' %s/merged_m.json > %s/b.txt && cmp -s %s/a.txt %s/b.txt",
                        root, root, root, root, root, root),
                     0);
    /* a shard given twice is refused; a missing one is a warning */
    ck_assert_int_eq(sh("./segattn eval -q --merge %s/part1.json %s/part1.json > /dev/null 2>&1", root, root), 3);
    ck_assert_int_eq(sh("./segattn eval --merge %s/part1.json %s/part2.json 2>&1 >/dev/null | grep -q '1 of 3 shards missing'", root, root), 0);
}
END_TEST

static int count_png(const char *dir) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ls %s 2>/dev/null | grep -c '\\.png$'", dir);
    FILE *p = popen(cmd, "r");
    int n = 0;
    if (p && fscanf(p, "%d", &n) != 1) n = 0;
    if (p) pclose(p);
    return n;
}

START_TEST(predict_resumes_after_interrupt) {
    if (!have_python) return;
    /* 16 images, interrupted (SIGINT) once two are written, then killed hard (SIGKILL) mid-run */
    ck_assert_int_eq(sh("mkdir -p %s/many && for i in $(seq 10 25); do cp %s/camvid/images/$(ls %s/camvid/images | head -1) "
                        "%s/many/img$i.png; done",
                        root, root, root, root),
                     0);
    char out[512], cmd[1024];
    snprintf(out, sizeof out, "%s/many_out", root);
    snprintf(cmd, sizeof cmd, "exec ./segattn predict -q -t 1 %s -o %s %s/many", model, out, root);
    for (int round = 0; round < 2; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
            _exit(127);
        }
        int target = round == 0 ? 2 : 5;
        for (int t = 0; t < 3000 && count_png(out) < target; t++) usleep(10000);
        kill(pid, round == 0 ? SIGINT : SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        if (round == 0) ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 130, "status %d", st);
        else ck_assert(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) == 0));
    }
    int before = count_png(out);
    ck_assert_msg(before >= 5, "only %d written before the interruptions", before);
    if (before < 16) {
        /* every file under its final name is complete */
        ck_assert_int_eq(sh("for f in %s/*.png; do /usr/bin/python3 -c 'import sys; from PIL import Image; Image.open(sys.argv[1]).load()' $f || exit 1; done", out), 0);
        char log[512];
        snprintf(log, sizeof log, "%s/resume.log", root);
        ck_assert_int_eq(sh("./segattn predict -t 2 %s -o %s %s/many 2> %s", model, out, root, log), 0);
        ck_assert_int_eq(sh("grep -q '%d written, %d skipped' %s", 16 - before, before, log), 0);
    }
    ck_assert_int_eq(count_png(out), 16);
    /* a completed run does nothing the second time; --force redoes it */
    ck_assert_int_eq(sh("./segattn predict %s -o %s %s/many 2>&1 | grep -q '0 written, 16 skipped'", model, out, root), 0);
}
END_TEST

START_TEST(predict_bad_image_in_folder) {
    if (!have_python) return;
    ck_assert_int_eq(sh("mkdir -p %s/bad && cp %s/camvid/images/* %s/bad/ && printf 'not an image' > %s/bad/0000_broken.png && "
                        "head -c 300 %s/camvid/labels/$(ls %s/camvid/labels | head -1) > %s/bad/0001_truncated.png",
                        root, root, root, root, root, root, root),
                     0);
    char log[512];
    snprintf(log, sizeof log, "%s/bad.log", root);
    ck_assert_int_eq(sh("./segattn predict -t 2 %s --json %s/bad.json -o %s/bad_out %s/bad 2> %s", model, root, root, root, log), 3);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/bad_out", root);
    ck_assert_int_eq(count_png(dir), 4);
    ck_assert_int_eq(sh("grep -q '0000_broken.png' %s && grep -q '4 written, 0 skipped (already there), 2 failed' %s", log, log), 0);
    cJSON *j = NULL;
    char p[512];
    snprintf(p, sizeof p, "%s/bad.json", root);
    ck_assert((j = read_json(p)) != NULL);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "images")), 4);
    cJSON_Delete(j);
    /* eval reports the bad pair, scores the rest, and exits 3 */
    ck_assert_int_eq(sh("cp -r %s/camvid %s/camvid_bad && printf 'x' > %s/camvid_bad/labels/$(ls %s/camvid/labels | head -1)",
                        root, root, root, root),
                     0);
    ck_assert_int_eq(sh("./segattn eval -q -t 2 %s --dataset camvid --root %s/camvid_bad > %s/evbad.txt 2> %s/evbad.err", model,
                        root, root, root),
                     3);
    ck_assert_int_eq(sh("grep -q 'camvid, 3 images)' %s/evbad.txt && grep -q '1 of 4 images failed' %s/evbad.err", root, root), 0);
}
END_TEST

START_TEST(slide_and_tta_match_numpy) {
    if (!have_python) return;
    const char *dir = "tests/data/tiny_r18_ccnet";
    char tiny[512];
    snprintf(tiny, sizeof tiny, "-c %s/model.json -w %s/weights.safetensors", dir, dir);
    /* slide: 75×99 image, 48×64 windows every 32×40 → 2×2 windows, the last ones shifted back */
    ck_assert_int_eq(sh("mkdir -p %s/slide && /usr/bin/python3 tests/gen/eval_trees.py slide %s/input0.png 48 64 32 40 %s/slide",
                        root, dir, root),
                     0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(sh("./segattn predict -q --force -t 2 %s --logits %s/slide/lg%d.safetensors -o %s/slide/w%d_seg.png "
                            "%s/slide/win%d.png",
                            tiny, root, i, root, i, root, i),
                         0);
    ck_assert_int_eq(sh("./segattn predict -q --force -t 2 %s --mode slide --crop 48,64 --stride 32,40 --logits %s/slide/got.safetensors "
                        "-o %s/slide/got.png %s/input0.png",
                        tiny, root, root, dir),
                     0);
    ck_assert_int_eq(sh("/usr/bin/python3 tests/gen/eval_trees.py slide_check 75 99 %s/slide/boxes.txt %s/slide/lg 0 "
                        "%s/slide/got.safetensors",
                        root, root, root),
                     0);
    /* flip TTA: softmax of the image and of its mirror (flipped back), averaged */
    ck_assert_int_eq(sh("/usr/bin/python3 -c 'import sys; from PIL import Image; "
                        "Image.open(sys.argv[1]).transpose(Image.FLIP_LEFT_RIGHT).save(sys.argv[2])' %s/input0.png %s/slide/mirror.png",
                        dir, root),
                     0);
    ck_assert_int_eq(sh("./segattn predict -q --force -t 2 %s --logits %s/slide/plain.safetensors -o %s/slide/a.png %s/input0.png && "
                        "./segattn predict -q --force -t 2 %s --logits %s/slide/mirror.safetensors -o %s/slide/b.png %s/slide/mirror.png && "
                        "./segattn predict -q --force -t 2 %s --flip --logits %s/slide/tta.safetensors -o %s/slide/c.png %s/input0.png",
                        tiny, root, root, dir, tiny, root, root, root, tiny, root, root, dir),
                     0);
    ck_assert_int_eq(sh("/usr/bin/python3 tests/gen/eval_trees.py tta_check 75 99 0 %s/slide/plain.safetensors "
                        "%s/slide/mirror.safetensors %s/slide/tta.safetensors",
                        root, root, root),
                     0);
    /* a window as large as the image, and --tta 1, are the whole-image run */
    ck_assert_int_eq(sh("./segattn predict -q --force -t 2 %s --mode slide --crop 75,99 --stride 75,99 --format index -o %s/slide/s.png %s/input0.png && "
                        "./segattn predict -q --force -t 2 %s --tta scales=1 --format index -o %s/slide/t.png %s/input0.png && "
                        "./segattn predict -q --force -t 2 %s --format index -o %s/slide/w.png %s/input0.png && "
                        "cmp -s %s/slide/s.png %s/slide/w.png && cmp -s %s/slide/t.png %s/slide/w.png",
                        tiny, root, dir, tiny, root, dir, tiny, root, dir, root, root, root, root),
                     0);
}
END_TEST

START_TEST(rescale_rules) {
    int w, h;
    infer_rescale_size(500, 375, 2048, 512, &w, &h); /* VOC: short side to 512 */
    ck_assert_int_eq(w, 683);
    ck_assert_int_eq(h, 512);
    infer_rescale_size(2048, 1024, 2049, 1025, &w, &h); /* Cityscapes-769 */
    ck_assert_int_eq(w, 2049);
    ck_assert_int_eq(h, 1025);
    infer_rescale_size(2048, 1024, 1024, 2048, &w, &h); /* either order */
    ck_assert_int_eq(w, 2048);
    ck_assert_int_eq(h, 1024);
    /* cv2's exact halving is a 2×2 average rounded half up */
    uint8_t px[4 * 2 * 3] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 255};
    sa_image src = {4, 2, px}, dst;
    sa_error err = {0};
    ck_assert_int_eq(infer_resize_u8(&src, 2, 1, &dst, &err), 0);
    ck_assert_int_eq(dst.rgb[0], (0 + 3 + 1 + 1 + 2) >> 2);
    ck_assert_int_eq(dst.rgb[5], (8 + 11 + 2 + 255 + 2) >> 2);
    sa_image_free(&dst);
}
END_TEST

/* The four output kinds agree with the index map: palette colours, blend, Cityscapes labelIds; @LIST input. */
START_TEST(predict_formats) {
    if (!have_python) return;
    ck_assert_int_eq(sh("ls %s/camvid/images/*.png | head -2 > %s/list.txt", root, root), 0);
    static const char *kinds[] = {"index", "color", "overlay --opacity 0.3", "cityscapes-id"};
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(sh("./segattn predict -q -t 2 %s --format %s -o %s/fmt%d @%s/list.txt", model, kinds[i], root, i, root), 0);
    ck_assert_int_eq(
        sh("/usr/bin/python3 -c '\n"
           "import sys, os, json, numpy as np\nfrom PIL import Image\n"
           "r = sys.argv[1]; cfg = json.load(open(\"configs/camvid_r18-d8_fcn.json\")); pal = np.array(cfg[\"palette\"])\n"
           "lid = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23])\n"
           "names = [os.path.basename(l.strip()) for l in open(r + \"/list.txt\")]\n"
           "assert sorted(os.listdir(r + \"/fmt0\")) == sorted(names)\n"
           "for n in names:\n"
           "    idx = np.array(Image.open(r + \"/fmt0/\" + n)); img = np.array(Image.open(r + \"/camvid/images/\" + n)).astype(float)\n"
           "    assert (np.array(Image.open(r + \"/fmt1/\" + n)) == pal[idx]).all()\n"
           "    assert np.abs(np.array(Image.open(r + \"/fmt2/\" + n)) - (0.3 * pal[idx] + 0.7 * img)).max() <= 1\n"
           "    assert (np.array(Image.open(r + \"/fmt3/\" + n)) == lid[idx]).all()\n"
           "' %s",
           root),
        0);
}
END_TEST

/* Bit for bit against cv2.resize(INTER_LINEAR) when Debian's python3-opencv is there. */
START_TEST(resize_matches_cv2) {
    if (run_status("/usr/bin/python3 -c 'import cv2, numpy, PIL' 2>/dev/null") != 0) {
        fprintf(stderr, "test_eval: no python3-opencv, cv2 resize comparison skipped\n");
        return;
    }
    const char *in = "tests/data/tiny_r18_ccnet/input0.png";
    sa_image img, out;
    sa_error err = {0};
    ck_assert_int_eq(sa_image_load(in, 0, &img, &err), 0);
    static const int sizes[][2] = {{198, 150}, {49, 37}, {133, 101}, {200, 61}, {31, 150}, {1, 1}, {300, 220}, {50, 38}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int w = sizes[i][0], h = sizes[i][1];
        ck_assert_int_eq(infer_resize_u8(&img, w, h, &out, &err), 0);
        char raw[256];
        snprintf(raw, sizeof raw, "/tmp/segattn_rz_%d.raw", (int)getpid());
        FILE *f = fopen(raw, "wb");
        fwrite(out.rgb, 1, (size_t)w * h * 3, f);
        fclose(f);
        sa_image_free(&out);
        ck_assert_msg(sh("/usr/bin/python3 -c 'import sys, cv2, numpy as np; from PIL import Image; "
                         "im = np.array(Image.open(sys.argv[1]).convert(\"RGB\")); w, h = int(sys.argv[3]), int(sys.argv[4]); "
                         "got = np.fromfile(sys.argv[2], np.uint8).reshape(h, w, 3); "
                         "sys.exit(int(not (got == cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR)).all()))' %s %s %d %d",
                         in, raw, w, h) == 0,
                      "%dx%d differs from cv2", w, h);
        remove(raw);
    }
    sa_image_free(&img);
}
END_TEST

Suite *eval_suite(void) {
    Suite *s = suite_create("eval");
    TCase *t = tcase_create("metrics");
    tcase_add_test(t, metrics_by_hand);
    tcase_add_test(t, confusion_files);
    tcase_add_test(t, png_palette_depths_and_filters);
    tcase_add_test(t, png_hostile);
    tcase_add_test(t, rescale_rules);
    suite_add_tcase(s, t);
    TCase *e = tcase_create("end-to-end");
    tcase_set_timeout(e, 300);
    tcase_add_unchecked_fixture(e, trees_setup, trees_teardown);
    tcase_add_test(e, layouts_agree_and_match_numpy);
    tcase_add_test(e, shard_merge_with_parallel);
    tcase_add_test(e, predict_resumes_after_interrupt);
    tcase_add_test(e, predict_bad_image_in_folder);
    tcase_add_test(e, slide_and_tta_match_numpy);
    tcase_add_test(e, resize_matches_cv2);
    tcase_add_test(e, predict_formats);
    suite_add_tcase(s, e);
    return s;
}
