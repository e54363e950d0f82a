/* End to end: the real binary on the parity vectors (tests/data, copied from ../shared/parity) and on the
 * shipped CamVid model's reference images. Logits within 1e-3 × max|reference|, labels equal wherever the
 * reference's top-1 − top-2 margin exceeds 1e-3. */
#include <dirent.h>
#include <math.h>
#include <stb/stb_image.h>
#include <sys/stat.h>
#include <unistd.h>

#include "segattn.h"
#include "testutil.h"

typedef struct {
    double logit_rel_err;
    long label_mismatch, label_checked, pixels;
} parity_result;

/* Runs `segattn predict` and compares with expected<i>.safetensors and labels<i>.png in `dir`. */
static parity_result run_case(const char *dir, int i, const char *model_args, const char *threads) {
    parity_result r = {0};
    char cmd[2048], logits[256], labels[256], path[512];
    snprintf(logits, sizeof logits, "/tmp/segattn_test_%d_logits.safetensors", (int)getpid());
    snprintf(labels, sizeof labels, "/tmp/segattn_test_%d_labels.png", (int)getpid());
    snprintf(cmd, sizeof cmd, "%s predict -q --force -t %s %s --format index --logits %s -o %s %s/input%d.png",
             segattn_bin(), threads, model_args, logits, labels, dir, i);
    ck_assert_msg(run_status(cmd) == 0, "command failed: %s", cmd);
    int nd_e, nd_g;
    int64_t de[8], dg[8];
    snprintf(path, sizeof path, "%s/expected%d.safetensors", dir, i);
    float *exp = load_tensor(path, "logits", &nd_e, de), *got = load_tensor(logits, "logits", &nd_g, dg);
    ck_assert_msg(exp && got, "%s: cannot read logits", dir);
    ck_assert_int_eq(nd_e, 4);
    ck_assert_int_eq(nd_g, 4);
    for (int d = 0; d < 4; d++) ck_assert_msg(de[d] == dg[d], "%s: logits shape differs in dim %d", dir, d);
    size_t n = (size_t)(de[0] * de[1] * de[2] * de[3]);
    double max_ref = 0, max_err = 0;
    for (size_t k = 0; k < n; k++) {
        max_ref = fmax(max_ref, fabs(exp[k]));
        max_err = fmax(max_err, fabs((double)exp[k] - got[k]));
    }
    r.logit_rel_err = max_err / max_ref;
    int mnd;
    int64_t md[8];
    snprintf(path, sizeof path, "%s/expected%d.safetensors", dir, i);
    float *margin = load_tensor(path, "margin", &mnd, md);
    snprintf(path, sizeof path, "%s/labels%d.png", dir, i);
    int w1, h1, c1, w2, h2, c2;
    unsigned char *ref = stbi_load(path, &w1, &h1, &c1, 1), *ours = stbi_load(labels, &w2, &h2, &c2, 1);
    ck_assert_msg(ref && ours && margin, "%s: cannot read labels or margin", dir);
    ck_assert_int_eq(w1, w2);
    ck_assert_int_eq(h1, h2);
    ck_assert_int_eq(mnd, 2);
    ck_assert_int_eq(md[0], h1);
    ck_assert_int_eq(md[1], w1);
    r.pixels = (long)w1 * h1;
    for (long p = 0; p < r.pixels; p++) {
        if (margin[p] <= 1e-3f) continue;
        r.label_checked++;
        r.label_mismatch += ref[p] != ours[p];
    }
    stbi_image_free(ref), stbi_image_free(ours);
    free(exp), free(got), free(margin);
    remove(logits), remove(labels);
    return r;
}

static int list_cases(const char *root, char names[][128], int max) {
    DIR *d = opendir(root);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && n < max)
        if (e->d_name[0] != '.') snprintf(names[n++], 128, "%s", e->d_name);
    if (d) closedir(d);
    qsort(names, (size_t)n, 128, (int (*)(const void *, const void *))strcmp);
    return n;
}

START_TEST(parity_vectors) {
    char names[64][128];
    int n = list_cases("tests/data", names, 64), ran = 0;
    for (int c = 0; c < n; c++) {
        char dir[256], args[700], model[300];
        snprintf(dir, sizeof dir, "tests/data/%s", names[c]);
        snprintf(model, sizeof model, "%s/model.json", dir);
        if (access(model, R_OK) != 0) continue;
        snprintf(args, sizeof args, "-c %s/model.json -w %s/weights.safetensors", dir, dir);
        for (int i = 0; i < 2; i++) {
            parity_result r = run_case(dir, i, args, "2");
            ck_assert_msg(r.logit_rel_err <= 1e-3, "%s input%d: logits off by %g of max|ref|", names[c], i, r.logit_rel_err);
            ck_assert_msg(r.label_mismatch == 0, "%s input%d: %ld of %ld confident labels differ", names[c], i,
                          r.label_mismatch, r.label_checked);
            ck_assert_msg(r.label_checked > r.pixels / 2, "%s input%d: too few confident pixels to judge", names[c], i);
            ran++;
        }
    }
    ck_assert_msg(ran >= 16, "only %d parity runs found under tests/data", ran);
}
END_TEST

START_TEST(shipped_models_match_pytorch) {
    static const char *heads[] = {"ccnet", "fcn", "ann", "isanet", "eanet", "nonlocal"};
    /* SEGATTN_PARITY_QUICK (make asan-test): the first head only, to keep the sanitized run short. */
    int n_heads = getenv("SEGATTN_PARITY_QUICK") ? 1 : 6;
    for (int h = 0; h < n_heads; h++) {
        char dir[256], args[256];
        snprintf(dir, sizeof dir, "tests/ref/camvid_r18_%s", heads[h]);
        snprintf(args, sizeof args, "-c configs/camvid_r18-d8_%s.json", heads[h]);
        for (int i = 0; i < 2; i++) {
            parity_result r = run_case(dir, i, args, "2");
            ck_assert_msg(r.logit_rel_err <= 1e-3, "%s input%d: logits off by %g", heads[h], i, r.logit_rel_err);
            /* Labels must agree wherever the reference is confident, and on >= 99.9 % of all pixels. */
            ck_assert_msg(r.label_mismatch == 0, "%s input%d: %ld confident labels differ", heads[h], i, r.label_mismatch);
            ck_assert_msg(r.label_checked >= r.pixels * 999 / 1000 || r.label_mismatch == 0, "%s", heads[h]);
        }
    }
}
END_TEST

START_TEST(thread_count_does_not_change_output) {
    const char *dir = "tests/data/tiny_r101_isanet";
    char cmd[1024];
    for (int t = 1; t <= 2; t++) {
        snprintf(cmd, sizeof cmd,
                 "%s predict -q --force -t %d -c %s/model.json -w %s/weights.safetensors --logits "
                 "/tmp/segattn_t%d_%d.safetensors -o /tmp/segattn_t%d_%d.png %s/input1.png",
                 segattn_bin(), t, dir, dir, t, (int)getpid(), t, (int)getpid(), dir);
        ck_assert_int_eq(run_status(cmd), 0);
    }
    snprintf(cmd, sizeof cmd, "cmp -s /tmp/segattn_t1_%d.safetensors /tmp/segattn_t2_%d.safetensors", (int)getpid(),
             (int)getpid());
    int same = run_status(cmd) == 0;
    snprintf(cmd, sizeof cmd, "rm -f /tmp/segattn_t[12]_%d.*", (int)getpid());
    run_status(cmd);
    ck_assert_msg(same, "logits differ between 1 and 2 threads");
}
END_TEST

/* One loaded model run on 1, then 2, then 1 thread again in the same process: the activation arena is
 * planned for a thread count (conv scratch depends on it), so a change must replan, and the logits must
 * not change by a bit. */
START_TEST(thread_count_change_in_one_process) {
    const char *dir = "tests/data/tiny_r101_isanet";
    char cfg[256], wts[256], png[256];
    snprintf(cfg, sizeof cfg, "%s/model.json", dir), snprintf(wts, sizeof wts, "%s/weights.safetensors", dir);
    snprintf(png, sizeof png, "%s/input1.png", dir);
    const char *weights[1] = {wts};
    sa_error err = {0};
    sa_model *m = sa_model_load(cfg, weights, 1, &err);
    ck_assert_msg(m != NULL, "%s", err.msg);
    sa_image img;
    ck_assert_int_eq(sa_image_load(png, 0, &img, &err), 0);
    sa_logits first = {0};
    static const int counts[] = {1, 2, 1, 3};
    for (int i = 0; i < 4; i++) {
        sa_labels lab;
        sa_logits lg;
        int code = sa_predict(m, &img, &(sa_run_opts){.threads = counts[i]}, &lab, &lg, &err);
        ck_assert_msg(code == 0, "%d threads after %d: %s", counts[i], i ? counts[i - 1] : 0, err.msg);
        if (i == 0) first = lg;
        else {
            ck_assert_msg(memcmp(first.data, lg.data, (size_t)lg.k * lg.h * lg.w * sizeof(float)) == 0,
                          "logits on %d threads differ from 1", counts[i]);
            sa_logits_free(&lg);
        }
        sa_labels_free(&lab);
    }
    sa_logits_free(&first), sa_image_free(&img), sa_model_free(m);
}
END_TEST

Suite *parity_suite(void) {
    Suite *s = suite_create("parity");
    TCase *t = tcase_create("end-to-end");
    tcase_set_timeout(t, 600);
    tcase_add_test(t, parity_vectors);
    tcase_add_test(t, shipped_models_match_pytorch);
    tcase_add_test(t, thread_count_does_not_change_output);
    tcase_add_test(t, thread_count_change_in_one_process);
    suite_add_tcase(s, t);
    return s;
}
