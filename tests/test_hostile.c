/* The hostile-input corpus: broken weights, configs, images, lists and outputs, each run through the real
 * program and held to its exit code, to a located error line (file, and field or tensor, named) and to
 * leaving no output file behind. Also: interrupted batches resume, and the fuzz regressions replay. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "image.h"
#include "inputs.h"
#include "testutil.h"

/* A small, fast model of the parity set: hostile weights are given with -w against its config. */
#define MODEL_DIR "tests/data/gen_r18_isanet_df46"
#define MODEL_ARGS "-c " MODEL_DIR "/model.json -w " MODEL_DIR "/weights.safetensors"

static char tmp[64]; /* per-test scratch directory */

static void setup(void) {
    snprintf(tmp, sizeof tmp, "/tmp/segattn_hostile_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp));
}

static void teardown(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "chmod -R u+rwx %s 2>/dev/null; rm -rf %s", tmp, tmp);
    run_status(cmd);
}

static const char *at(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmp, name);
    return buf[k];
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

/* A safetensors file: the 8-byte length (`claimed`, or the real one when 0), the header, `data_len` bytes. */
static void write_st(const char *path, const char *header, uint64_t claimed, size_t data_len) {
    size_t hl = strlen(header);
    uint64_t len = claimed ? claimed : hl;
    uint8_t *b = calloc(1, 8 + hl + data_len + 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(len >> (8 * i));
    memcpy(b + 8, header, hl);
    for (size_t i = 0; i < data_len; i++) b[8 + hl + i] = (uint8_t)(i * 7);
    write_bytes(path, b, 8 + hl + data_len);
    free(b);
}

/* An RGB PNG of w x h with some texture. */
static void write_png(const char *path, int w, int h) {
    uint8_t *p = malloc((size_t)w * h * 3 + 1);
    for (int i = 0; i < w * h * 3; i++) p[i] = (uint8_t)(i * 31 + i / 7);
    ck_assert(stbi_write_png(path, w, h, 3, p, w * 3));
    free(p);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    char *s = calloc(1, 1 << 16);
    size_t n = fread(s, 1, (1 << 16) - 1, f);
    s[n] = 0;
    fclose(f);
    return s;
}

/* Runs `segattn ARGS` (through sh, stderr captured); returns the exit status, stderr in *err_out. */
static int segattn(char **err_out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int segattn(char **err_out, const char *fmt, ...) {
    char args[3072], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s %s 2>%s/stderr.txt", segattn_bin(), args, tmp);
    int status = run_status(cmd);
    char path[512];
    snprintf(path, sizeof path, "%s/stderr.txt", tmp);
    *err_out = slurp(path);
    return status;
}

/* Asserts the exit status and that stderr holds `segattn: error: ` + `want`. */
static void expect_error(int status, char *err, int code, const char *want) {
    char line[1024];
    snprintf(line, sizeof line, "segattn: error: %s", want);
    ck_assert_msg(status == code, "exit %d, expected %d; stderr:\n%s", status, code, err);
    ck_assert_msg(strstr(err, line) != NULL, "stderr lacks \"%s\":\n%s", line, err);
    ck_assert_msg(!strstr(err, "Sanitizer") && !strstr(err, "runtime error"), "sanitizer report:\n%s", err);
    free(err);
}

/* No file named like `prefix*` (outputs and their temporaries) in the scratch directory or `dir`. */
static int count_files(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) n++;
    if (d) closedir(d);
    return n;
}

/* Runs segattn with the arguments after `want` and checks as expect_error does. */
#define EXPECT(code, want, ...)                        \
    do {                                               \
        char *e_;                                      \
        int s_ = segattn(&e_, __VA_ARGS__);            \
        expect_error(s_, e_, code, want);              \
    } while (0)

/* ---- weights ------------------------------------------------------------------------------------------ */

typedef struct {
    const char *header;
    uint64_t claimed;  /* header length written in the file; 0: the true one */
    size_t data;       /* data bytes after the header */
    const char *want;  /* after "FILE: " */
} st_case;

static const st_case ST_CASES[] = {
    {"{}", 1000, 0, "header length 1000 runs past the end of the file (10 bytes)"},
    {"{}", 0xffffffffffffffffull, 0, "header length 18446744073709551615 runs past the end of the file"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 0, 4,
     "a: data_offsets must be two increasing non-negative offsets"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551620]}}", 0, 4,
     "a: data_offsets must be two increasing non-negative offsets"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1e400]}}", 0, 4,
     "a: data_offsets must be two increasing non-negative offsets"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 0, 8,
     "a: data_offsets must be two increasing non-negative offsets"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", 0, 16,
     "a: data_offsets [0, 400] lie outside the 16 data bytes"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 0, 24, "b: data overlaps tensor a"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 0, 8,
     "a: 8 data bytes do not hold a F32 tensor of 4 elements"},
    {"{\"a\":{\"dtype\":\"F16\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 0, 8,
     "a: shape has a negative, fractional or huge size"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 0, 4,
     "a: shape has a negative, fractional or huge size"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 0, 4,
     "a: shape must be an array of at most 8 sizes"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":\"4\",\"data_offsets\":[0,16]}}", 0, 16,
     "a: shape must be an array of at most 8 sizes"},
    {"{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 0, 4, "a: missing or unsupported dtype"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 0, 8, "a: tensor name appears twice"},
    {"{\"a\":[1,2]}", 0, 0, "a: entry is not an object"},
    {"[1,2,3]", 0, 0, "header is not a JSON object"},
    {"{\"a\":{\"dtype\":", 0, 0, "header is not a JSON object"},
    {"{}", 0, 0, "backbone.stem.0.weight: tensor missing"},
};

START_TEST(hostile_weights) {
    const st_case *c = &ST_CASES[_i];
    const char *w = at("w.safetensors");
    write_st(w, c->header, c->claimed, c->data);
    char want[1024], *err;
    snprintf(want, sizeof want, "%s: %s", w, c->want);
    int status = segattn(&err, "predict -q -c %s/model.json -w %s -o %s %s/input0.png", MODEL_DIR, w,
                         at("out.png"), MODEL_DIR);
    expect_error(status, err, 4, want);
    ck_assert_int_eq(count_files(tmp, "out.png"), 0);
}
END_TEST

START_TEST(weights_truncated_and_empty) {
    write_bytes(at("short.safetensors"), "\x10\0\0", 3);
    write_bytes(at("empty.safetensors"), "", 0);
    char want[600];
    snprintf(want, sizeof want, "%s: truncated: 3 bytes, no header length", at("short.safetensors"));
    EXPECT(4, want, "predict -q -c %s/model.json -w %s %s/input0.png", MODEL_DIR, at("short.safetensors"),
                         MODEL_DIR);
    snprintf(want, sizeof want, "%s: truncated: 0 bytes", at("empty.safetensors"));
    EXPECT(4, want, "predict -q -c %s/model.json -w %s %s/input0.png", MODEL_DIR, at("empty.safetensors"),
                         MODEL_DIR);
    snprintf(want, sizeof want, "%s: not a regular file", tmp);
    EXPECT(4, want, "predict -q -c %s/model.json -w %s %s/input0.png", MODEL_DIR, tmp, MODEL_DIR);
    snprintf(want, sizeof want, "%s: cannot open weights: No such file or directory", at("none.safetensors"));
    EXPECT(4, want, "predict -q -c %s/model.json -w %s %s/input0.png", MODEL_DIR, at("none.safetensors"),
                         MODEL_DIR);
}
END_TEST

START_TEST(weights_duplicate_across_files) {
    char *err;
    int status = segattn(&err, "predict -q %s -w %s/weights.safetensors -o %s %s/input0.png", MODEL_ARGS, MODEL_DIR,
                         at("out.png"), MODEL_DIR);
    /* The first name in sorted order that both files hold. */
    expect_error(status, err, 4, MODEL_DIR "/weights.safetensors: backbone.layer1.0.bn1.bias: tensor name appears twice "
                                 "(also in " MODEL_DIR "/weights.safetensors)");
    ck_assert_int_eq(count_files(tmp, "out.png"), 0);
}
END_TEST

/* NaN and infinity in the weights: one warning line naming the tensor; the prediction still runs. */
START_TEST(weights_non_finite_warn) {
    weight_store ws = {0};
    sa_error e = {0};
    ck_assert_int_eq(weights_open(&ws, MODEL_DIR "/weights.safetensors", &e), 0);
    const st_tensor *t = NULL;
    for (int i = 0; i < ws.n; i++)
        if (strcmp(ws.t[i].name, "decode_head.conv_seg.weight") == 0) t = &ws.t[i];
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->dtype, ST_F32);
    size_t off = (size_t)(t->data - (const uint8_t *)ws.files[0].map), size = ws.files[0].size;
    uint8_t *copy = malloc(size);
    memcpy(copy, ws.files[0].map, size);
    weights_close(&ws);
    float bad[3] = {NAN, INFINITY, -INFINITY};
    memcpy(copy + off + 4, bad, sizeof bad);
    write_bytes(at("nan.safetensors"), copy, size);
    free(copy);
    char *err;
    int status = segattn(&err, "predict -q -c %s/model.json -w %s -o %s %s/input0.png", MODEL_DIR,
                         at("nan.safetensors"), at("out.png"), MODEL_DIR);
    char want[600];
    snprintf(want, sizeof want, "segattn: warning: %s: decode_head.conv_seg.weight: 3 of 96 values are NaN or infinite",
             at("nan.safetensors"));
    ck_assert_msg(status == 0, "exit %d: %s", status, err);
    ck_assert_msg(strstr(err, want), "stderr lacks \"%s\":\n%s", want, err);
    free(err);
    ck_assert_int_eq(access(at("out.png"), F_OK), 0);
}
END_TEST

/* ---- model JSON --------------------------------------------------------------------------------------- */

typedef struct {
    const char *from, *to; /* text replaced in the valid model.json */
    const char *want;      /* after "FILE: " */
} json_case;

static const json_case JSON_CASES[] = {
    {"\"num_classes\": 6", "\"num_classes\": \"6\"", "decode_head.num_classes: must be a whole number in [1, 256]"},
    {"\"num_classes\": 6", "\"num_classes\": 6.5", "decode_head.num_classes: must be a whole number in [1, 256]"},
    {"\"num_classes\": 6", "\"num_classes\": 1e400", "decode_head.num_classes: must be a whole number in [1, 256]"},
    {"\"num_classes\": 6", "\"num_classes\": -1e308", "decode_head.num_classes: must be a whole number in [1, 256]"},
    {"\"depth\": 18", "\"depth\": 18000000000000000000000", "backbone.depth: must be a whole number in [18, 152]"},
    {"\"depth\": 18", "\"depth\": null", "backbone.depth: must be a whole number in [18, 152]"},
    {"\"type\": \"ResNetV1c\"", "\"type\": 1", "backbone.type: must be \"ResNetV1c\""},
    {"\"to_rgb\": true", "\"to_rgb\": \"yes\"", "to_rgb: must be true or false"},
    {"\"mean\": [", "\"mean\": [1e999, ", "mean: must be an array of 3 numbers"},
    {"\"std\": [", "\"std\": [0, 1, ", "std: must be an array of 3 numbers"},
    {"\"in_channels\": 64", "\"in_channels\": [64, 64]", "decode_head.in_channels: must be a number or 1 to 1 whole"},
    {"\"in_channels\": 64", "\"in_channels\": 99999999999", "decode_head.in_channels: must be a number or 1 to 1"},
    {"\"decode_head\": {", "\"decode_head\": 7, \"x\": {", "decode_head: missing or not an object"},
};

/* model.json of MODEL_DIR with one substitution, written to the scratch directory. */
static void write_json_case(const char *path, const char *from, const char *to) {
    char *text = slurp(MODEL_DIR "/model.json");
    char *hit = strstr(text, from);
    ck_assert_msg(hit != NULL, "model.json has no \"%s\"", from);
    FILE *f = fopen(path, "wb");
    fwrite(text, 1, (size_t)(hit - text), f);
    fputs(to, f);
    fputs(hit + strlen(from), f);
    fclose(f);
    free(text);
}

START_TEST(hostile_json) {
    const json_case *c = &JSON_CASES[_i];
    const char *cfg = at("model.json");
    write_json_case(cfg, c->from, c->to);
    char want[1024], *err;
    snprintf(want, sizeof want, "%s: %s", cfg, c->want);
    int status = segattn(&err, "predict -q -c %s -w %s/weights.safetensors -o %s %s/input0.png", cfg, MODEL_DIR,
                         at("out.png"), MODEL_DIR);
    expect_error(status, err, 4, want);
    ck_assert_int_eq(count_files(tmp, "out.png"), 0);
}
END_TEST

START_TEST(json_deep_nesting_and_garbage) {
    /* 100000 nested arrays: refused by the parser's nesting limit, not by the stack. */
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 64);
    size_t k = (size_t)sprintf(deep, "{\"backbone\": ");
    for (size_t i = 0; i < depth; i++) deep[k++] = '[';
    for (size_t i = 0; i < depth; i++) deep[k++] = ']';
    deep[k++] = '}';
    deep[k] = 0;
    write_text(at("deep.json"), deep);
    free(deep);
    write_text(at("empty.json"), "");
    write_text(at("array.json"), "[1, 2]");
    write_bytes(at("nul.json"), "{\"a\"\0: 1}", 9); /* cJSON alone would take the NUL for a space */
    char want[600];
    const char *names[] = {"deep.json", "empty.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(want, sizeof want, "%s: invalid JSON near byte", at(names[i]));
        EXPECT(4, want, "predict -q -c %s -w %s/weights.safetensors %s/input0.png", at(names[i]), MODEL_DIR,
                             MODEL_DIR);
    }
    snprintf(want, sizeof want, "%s: NUL byte at offset 4: not JSON text", at("nul.json"));
    EXPECT(4, want, "predict -q -c %s -w %s/weights.safetensors %s/input0.png", at("nul.json"), MODEL_DIR, MODEL_DIR);
    snprintf(want, sizeof want, "%s: (top level): must be an object", at("array.json"));
    EXPECT(4, want, "predict -q -c %s -w %s/weights.safetensors %s/input0.png", at("array.json"), MODEL_DIR,
                         MODEL_DIR);
    snprintf(want, sizeof want, "%s: cannot open config: No such file or directory", at("none.json"));
    EXPECT(4, want, "predict -q -c %s %s/input0.png", at("none.json"), MODEL_DIR);
}
END_TEST

/* ---- images ------------------------------------------------------------------------------------------- */

/* A PNG whose header claims w x h, with no pixel data. */
static void write_png_header_only(const char *path, uint32_t w, uint32_t h) {
    uint8_t b[33] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
    for (int i = 0; i < 4; i++) b[16 + i] = (uint8_t)(w >> (24 - 8 * i)), b[20 + i] = (uint8_t)(h >> (24 - 8 * i));
    b[24] = 8, b[25] = 2; /* 8-bit RGB; CRC left zero: stb does not check it */
    write_bytes(path, b, sizeof b);
}

START_TEST(images_zero_tiny_and_huge) {
    char want[600], *err;
    write_bytes(at("empty.png"), "", 0);
    snprintf(want, sizeof want, "%s: empty file, not an image", at("empty.png"));
    EXPECT(3, want, "predict -q %s -o %s %s", MODEL_ARGS, at("out.png"), at("empty.png"));
    write_png_header_only(at("zero.png"), 0, 5);
    snprintf(want, sizeof want, "%s: not a decodable image", at("zero.png"));
    EXPECT(3, want, "predict -q %s -o %s %s", MODEL_ARGS, at("out.png"), at("zero.png"));
    write_text(at("text.jpg"), "this is not a JPEG\n");
    snprintf(want, sizeof want, "%s: not a decodable image", at("text.jpg"));
    EXPECT(3, want, "predict -q %s -o %s %s", MODEL_ARGS, at("out.png"), at("text.jpg"));
    /* Over the default cap (64 Mpixel), judged from the header before any pixel is decoded. */
    write_png_header_only(at("huge.png"), 9000, 9000);
    snprintf(want, sizeof want, "%s: 9000x9000 image is over the 67108864-pixel limit (--max-pixels)", at("huge.png"));
    EXPECT(3, want, "predict -q %s -o %s %s", MODEL_ARGS, at("out.png"), at("huge.png"));
    /* Over stb's own limits (2^24 a side, 2^30 bytes), refused by the decoder's header check. */
    write_png_header_only(at("wide.png"), 0x7fffffff, 0x7fffffff);
    snprintf(want, sizeof want, "%s: not a decodable image", at("wide.png"));
    EXPECT(3, want, "predict -q %s -o %s %s", MODEL_ARGS, at("out.png"), at("wide.png"));
    write_png(at("small.png"), 16, 16);
    snprintf(want, sizeof want, "%s: 16x16 image is over the 255-pixel limit (--max-pixels)", at("small.png"));
    EXPECT(3, want, "predict -q --max-pixels 255 %s -o %s %s", MODEL_ARGS, at("out.png"), at("small.png"));
    /* Fuzz find: a JPEG Huffman table of more than 256 codes (stb 2.27 overflows on it). */
    snprintf(want, sizeof want, "tests/fuzz/regress/image/jpeg_dht_over_256_codes.jpg: corrupt JPEG at byte");
    EXPECT(3, want, "predict -q %s -o %s tests/fuzz/regress/image/jpeg_dht_over_256_codes.jpg", MODEL_ARGS,
                         at("out.png"));
    /* Fuzz find: a baseline scan whose Se of 0 hides that it decodes with an AC table no DHT defined (stb
     * 2.27 would read that table from uninitialised memory). A progressive JPEG still decodes (seeds). */
    snprintf(want, sizeof want,
             "tests/fuzz/regress/image/jpeg_baseline_scan_undefined_ac_table.jpg: corrupt JPEG at byte 128: scan uses a "
             "Huffman table that no DHT segment defined");
    EXPECT(3, want, "predict -q %s -o %s tests/fuzz/regress/image/jpeg_baseline_scan_undefined_ac_table.jpg",
           MODEL_ARGS, at("out.png"));
    /* Fuzz find: a 179-byte PNG whose second IDAT claims more bytes than the file has (stb 2.27 would
     * allocate 2 GiB for it before noticing). */
    snprintf(want, sizeof want, "tests/fuzz/regress/image/png_idat_length_past_end.png: truncated PNG: chunk at byte");
    EXPECT(3, want, "predict -q %s -o %s tests/fuzz/regress/image/png_idat_length_past_end.png", MODEL_ARGS,
           at("out.png"));
    ck_assert_int_eq(count_files(tmp, "out.png"), 0);
    /* A 1x1 and a 2x1 image are segmented like any other. */
    write_png(at("one.png"), 1, 1);
    write_png(at("line.png"), 2, 1);
    int status = segattn(&err, "predict -q %s -o %s %s %s", MODEL_ARGS, at("outdir"), at("one.png"), at("line.png"));
    ck_assert_msg(status == 0, "exit %d: %s", status, err);
    free(err);
    int w, h, c;
    uint8_t *p = stbi_load(at("outdir/one.png"), &w, &h, &c, 0);
    ck_assert_msg(p && w == 1 && h == 1, "1x1 output missing or wrong size");
    stbi_image_free(p);
}
END_TEST

/* A directory with non-images, broken and unreadable files: each failure is reported, the rest written, exit 3. */
START_TEST(directory_with_non_images) {
    char cmd[1024], *err;
    snprintf(cmd, sizeof cmd, "mkdir -p %s/in %s/in/sub.png", tmp, tmp);
    ck_assert_int_eq(run_status(cmd), 0);
    write_png(at("in/a.png"), 20, 12);
    write_text(at("in/notes.txt"), "not an image, and not named like one\n");
    write_text(at("in/fake.png"), "not a PNG\n");
    write_bytes(at("in/b.jpg"), "\xff\xd8\xff\xe0", 4); /* a JPEG that stops after its marker */
    ck_assert_int_eq(symlink("/nonexistent/segattn", at("in/gone.png")), 0);
    int unreadable = geteuid() != 0; /* root reads a mode-000 file anyway */
    if (unreadable) {
        write_png(at("in/locked.png"), 4, 4);
        chmod(at("in/locked.png"), 0);
    }
    int status = segattn(&err, "predict %s -o %s %s", MODEL_ARGS, at("out"), at("in"));
    ck_assert_msg(status == 3, "exit %d: %s", status, err);
    char want[600];
    const char *lines[][2] = {{"in/fake.png", "not a decodable image"},
                              {"in/b.jpg", "not a decodable image"},
                              {"in/gone.png", "cannot open image: No such file or directory"},
                              {"in/sub.png", "not a regular file"},
                              {"in/locked.png", "cannot open image: Permission denied"}};
    for (int i = 0; i < 4 + unreadable; i++) {
        snprintf(want, sizeof want, "segattn: error: %s: %s", at(lines[i][0]), lines[i][1]);
        ck_assert_msg(strstr(err, want), "stderr lacks \"%s\":\n%s", want, err);
    }
    ck_assert_msg(strstr(err, "1 written, 0 skipped (already there), "), "summary: %s", err);
    free(err);
    ck_assert_int_eq(access(at("out/a.png"), F_OK), 0);
    snprintf(cmd, sizeof cmd, "%s/out", tmp);
    ck_assert_int_eq(count_files(cmd, ""), 3); /* ., .. and a.png */
}
END_TEST

START_TEST(lists_hostile) {
    char want[600], *err;
    write_png(at("a.png"), 8, 8);
    write_bytes(at("nul.lst"), "a.png\nb\0c.png\n", 14);
    snprintf(want, sizeof want, "%s:2: line contains a NUL byte", at("nul.lst"));
    EXPECT(3, want, "predict -q %s -o %s @%s", MODEL_ARGS, at("out"), at("nul.lst"));
    char *longline = malloc(6000);
    memset(longline, 'x', 5000);
    strcpy(longline + 5000, ".png\n");
    write_text(at("long.lst"), longline);
    free(longline);
    snprintf(want, sizeof want, "%s:1: path longer than 4095 bytes", at("long.lst"));
    EXPECT(3, want, "predict -q %s -o %s @%s", MODEL_ARGS, at("out"), at("long.lst"));
    snprintf(want, sizeof want, "%s: cannot open list: No such file or directory", at("none.lst"));
    EXPECT(3, want, "predict -q %s -o %s @%s", MODEL_ARGS, at("out"), at("none.lst"));
    /* A list of only comments and blanks is no input at all. */
    write_text(at("blank.lst"), "# nothing\n\n   \n\r\n");
    int status = segattn(&err, "predict -q %s -o %s @%s", MODEL_ARGS, at("out"), at("blank.lst"));
    ck_assert_msg(status == 0, "exit %d: %s", status, err);
    free(err);
}
END_TEST

/* ---- outputs ------------------------------------------------------------------------------------------ */

START_TEST(output_not_writable) {
    char want[600];
    write_png(at("a.png"), 8, 8);
    write_text(at("file"), "a regular file where a directory is wanted\n");
    snprintf(want, sizeof want, "%s/sub: cannot create output directory: Not a directory", at("file"));
    EXPECT(5, want, "predict -q %s -o %s/sub %s %s", MODEL_ARGS, at("file"), at("a.png"), at("a.png"));
    snprintf(want, sizeof want, "%s/x.png: cannot write: Not a directory", at("file"));
    EXPECT(5, want, "predict -q %s -o %s/x.png %s", MODEL_ARGS, at("file"), at("a.png"));
    snprintf(want, sizeof want, "%s/x.json: cannot write: Not a directory", at("file"));
    EXPECT(5, want, "predict -q %s --json %s/x.json -o %s %s", MODEL_ARGS, at("file"), at("o.png"),
                         at("a.png"));
    ck_assert_int_eq(count_files(tmp, "o.png"), 0);
    if (geteuid() != 0) { /* root writes into a mode-555 directory anyway */
        char dir[600];
        snprintf(dir, sizeof dir, "%s/ro", tmp);
        mkdir(dir, 0555);
        snprintf(want, sizeof want, "%s/a.png: cannot write: Permission denied", dir);
        EXPECT(5, want, "predict -q %s -o %s %s %s", MODEL_ARGS, dir, at("a.png"), at("a.png"));
    }
}
END_TEST

/* Disk full, simulated with a file-size limit of 0 (RLIMIT_FSIZE: writes fail with EFBIG, SIGXFSZ ignored):
 * the error names the output, exit 5, and neither the output nor its temporary file stays. The limit holds
 * for the program only; its stderr goes through a pipe to a reader without the limit. */
static int run_disk_full(char **err, const char *args) {
    char cmd[3072], err_path[600];
    snprintf(err_path, sizeof err_path, "%s/stderr.txt", tmp);
    snprintf(cmd, sizeof cmd, "(trap '' XFSZ; ulimit -f 0; %s %s; echo \"exit=$?\" >&2) 2>&1 >/dev/null | cat >%s",
             segattn_bin(), args, err_path);
    ck_assert_int_eq(run_status(cmd), 0);
    *err = slurp(err_path);
    const char *e = strstr(*err, "exit=");
    ck_assert_msg(e != NULL, "no exit status: %s", *err);
    return atoi(e + 5);
}

START_TEST(output_disk_full) {
    char args[2048], want[600], *err;
    write_png(at("a.png"), 40, 30);
    snprintf(args, sizeof args, "predict -q %s -f overlay -o %s %s", MODEL_ARGS, at("out.png"), at("a.png"));
    int status = run_disk_full(&err, args);
    snprintf(want, sizeof want, "%s: write failed: File too large", at("out.png"));
    expect_error(status, err, 5, want);
    ck_assert_int_eq(count_files(tmp, "out.png"), 0);
    /* The logits file, written before the PNG. */
    snprintf(args, sizeof args, "predict -q %s --logits %s -o %s %s", MODEL_ARGS, at("l.safetensors"), at("out.png"),
             at("a.png"));
    status = run_disk_full(&err, args);
    snprintf(want, sizeof want, "%s: write failed: File too large", at("l.safetensors"));
    expect_error(status, err, 5, want);
    ck_assert_int_eq(count_files(tmp, "l.safetensors"), 0);
    ck_assert_int_eq(count_files(tmp, "out.png"), 0);
}
END_TEST

/* A batch stopped by SIGINT finishes the current image, leaves only complete outputs, exits 130; the next
 * run skips what is there and writes the rest. */
START_TEST(interrupted_batch_resumes) {
    enum { N = 24 };
    char path[600], out[600], list[600];
    snprintf(list, sizeof list, "%s/in.lst", tmp);
    FILE *lf = fopen(list, "w");
    for (int i = 0; i < N; i++) {
        snprintf(path, sizeof path, "%s/img%02d.png", tmp, i);
        write_png(path, 96 + i, 64);
        fprintf(lf, "%s\n", path);
    }
    fclose(lf);
    snprintf(out, sizeof out, "%s/out", tmp);
    char listarg[610];
    snprintf(listarg, sizeof listarg, "@%s", list);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 2);
        execl(segattn_bin(), segattn_bin(), "predict", "-q", "-t", "1", "-c", MODEL_DIR "/model.json", "-w",
              MODEL_DIR "/weights.safetensors", "-o", out, listarg, (char *)NULL);
        _exit(127);
    }
    /* Interrupt as soon as the first output is there. */
    struct timespec pause = {0, 5 * 1000 * 1000};
    int status = -1, waited = 0;
    for (int t = 0; t < 24000 && count_files(out, "img") == 0; t++) {
        if (waitpid(pid, &status, WNOHANG) == pid) { waited = 1; break; }
        nanosleep(&pause, NULL);
    }
    if (!waited) {
        kill(pid, SIGINT);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    }
    ck_assert_msg(WIFEXITED(status), "killed by signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    int code = WEXITSTATUS(status), done = count_files(out, "img");
    ck_assert_msg(code == 130 || (code == 0 && done == N), "exit %d with %d of %d written", code, done, N);
    /* Only complete files: every output decodes at its input's size; no temporaries. */
    DIR *d = opendir(out);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        ck_assert_msg(strstr(e->d_name, ".tmp") == NULL, "temporary file left: %s", e->d_name);
        int i = atoi(e->d_name + 3), w, h, c;
        snprintf(path, sizeof path, "%s/%s", out, e->d_name);
        uint8_t *p = stbi_load(path, &w, &h, &c, 0);
        ck_assert_msg(p && w == 96 + i && h == 64, "%s: incomplete output", e->d_name);
        stbi_image_free(p);
    }
    closedir(d);
    char *err;
    status = segattn(&err, "predict %s -o %s %s", MODEL_ARGS, out, listarg);
    ck_assert_msg(status == 0, "resume: exit %d: %s", status, err);
    char want[128];
    snprintf(want, sizeof want, "segattn: %d written, %d skipped (already there), 0 failed", N - done, done);
    ck_assert_msg(strstr(err, want), "resume stderr lacks \"%s\":\n%s", want, err);
    free(err);
    ck_assert_int_eq(count_files(out, "img"), N);
}
END_TEST

START_TEST(usage_errors) {
    char *err;
    int status = segattn(&err, "predict --max-pixels -5 x.png");
    expect_error(status, err, 2, "--max-pixels: '-5' is not a positive count");
    status = segattn(&err, "predict");
    expect_error(status, err, 2, "predict needs at least one IMAGE, DIR or @LIST");
    status = segattn(&err, "frobnicate");
    ck_assert_int_eq(status, 2);
    free(err);
    status = segattn(&err, "--help >/dev/null");
    ck_assert_int_eq(status, 0);
    free(err);
}
END_TEST

/* ---- fuzz regressions --------------------------------------------------------------------------------- */

/* Every file of tests/fuzz/seeds/NAME and tests/fuzz/regress/NAME through the parser the NAME target fuzzes:
 * it must return (an error or not) and, for the valid seeds, succeed. Under make asan-test any memory error
 * fails the test. */
typedef int (*replay_fn)(const uint8_t *data, size_t n, const char *path);

static int replay_safetensors(const uint8_t *data, size_t n, const char *path) {
    weight_store ws = {0};
    sa_error err = {0};
    ws.files[0].path = strdup(path);
    ws.n_files = 1;
    int code = st_parse(&ws, 0, data, n, &err);
    if (!code) code = weights_finish(&ws, &err);
    for (int i = 0; !code && i < ws.n; i++) {
        const st_tensor *t = &ws.t[i];
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
        if (numel > (1u << 24)) continue;
        float *dst = malloc((numel ? numel : 1) * sizeof *dst);
        int64_t shape[ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        char *name = strdup(t->name);
        weights_read(&ws, name, t->ndim, shape, dst, &err);
        free(dst), free(name);
    }
    free(weights_nonfinite(&ws));
    weights_close(&ws);
    return code;
}

static int replay_config(const uint8_t *data, size_t n, const char *path) {
    model_cfg cfg;
    sa_error err = {0};
    int code = config_parse((const char *)data, n, path, &cfg, &err);
    if (!code) config_free(&cfg);
    return code;
}

static int replay_image(const uint8_t *data, size_t n, const char *path) {
    sa_image img;
    sa_error err = {0};
    int code = sa_image_decode(data, n, path, 4 << 20, &img, &err);
    if (!code) sa_image_free(&img);
    return code;
}

static int replay_list(const uint8_t *data, size_t n, const char *path) {
    path_list l = {0};
    sa_error err = {0};
    int code = paths_parse_list(&l, (const char *)data, n, n && (data[0] & 1) ? "base/dir" : NULL, path, &err);
    paths_free(&l);
    return code;
}

static int replay_dir(const char *dir, replay_fn fn, int must_succeed) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[600];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        ck_assert_ptr_nonnull(f);
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        rewind(f);
        uint8_t *buf = malloc((size_t)size + 1);
        ck_assert_int_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
        fclose(f);
        uint8_t *exact = malloc(size ? (size_t)size : 1); /* exactly sized, as the fuzzer hands it */
        memcpy(exact, buf, (size_t)size);
        free(buf);
        int code = fn(exact, (size_t)size, path);
        free(exact);
        ck_assert_msg(!must_succeed || code == 0, "%s: seed refused (%d)", path, code);
        n++;
    }
    closedir(d);
    return n;
}

START_TEST(fuzz_regressions_replay) {
    static const struct {
        const char *name;
        replay_fn fn;
        int seeds_valid;
    } T[] = {{"safetensors", replay_safetensors, 1}, {"config", replay_config, 1}, {"image", replay_image, 1},
             {"list", replay_list, 1}};
    int seeds = 0;
    for (int i = 0; i < 4; i++) {
        char dir[256];
        snprintf(dir, sizeof dir, "tests/fuzz/seeds/%s", T[i].name);
        seeds += replay_dir(dir, T[i].fn, T[i].seeds_valid);
        snprintf(dir, sizeof dir, "tests/fuzz/regress/%s", T[i].name);
        replay_dir(dir, T[i].fn, 0);
    }
    ck_assert_int_ge(seeds, 20);
}
END_TEST

Suite *hostile_suite(void) {
    Suite *s = suite_create("hostile");
    TCase *t = tcase_create("hostile inputs");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 300);
    tcase_add_loop_test(t, hostile_weights, 0, (int)(sizeof ST_CASES / sizeof ST_CASES[0]));
    tcase_add_test(t, weights_truncated_and_empty);
    tcase_add_test(t, weights_duplicate_across_files);
    tcase_add_test(t, weights_non_finite_warn);
    tcase_add_loop_test(t, hostile_json, 0, (int)(sizeof JSON_CASES / sizeof JSON_CASES[0]));
    tcase_add_test(t, json_deep_nesting_and_garbage);
    tcase_add_test(t, images_zero_tiny_and_huge);
    tcase_add_test(t, directory_with_non_images);
    tcase_add_test(t, lists_hostile);
    tcase_add_test(t, output_not_writable);
    tcase_add_test(t, output_disk_full);
    tcase_add_test(t, interrupted_batch_resumes);
    tcase_add_test(t, usage_errors);
    tcase_add_test(t, fuzz_regressions_replay);
    suite_add_tcase(s, t);
    return s;
}
