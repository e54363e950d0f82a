/* `segattn bench --module`: the bare modules' MAC and parameter counts against closed forms (at the
 * efficiency papers' 1×512×128×128 input), and real runs of every module on a small odd-sized input. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "module_bench.h"
#include "testutil.h"

static module_stats count(const char *name, int c, int h, int w) {
    module_stats st;
    sa_error err = {0};
    int code = module_bench(name, c, h, w, 0, 0, &st, &err);
    ck_assert_msg(code == 0, "%s: %s", name, err.msg);
    return st;
}

START_TEST(nonlocal_macs_as_the_papers_count) {
    /* Self-attention at C = 512: four 1×1 C→C projections (theta, phi, g, out) and the two N×N matmuls
     * (QKᵀ and AV, C channels each): 4·N·C² + 2·N²·C = 292.06 G for N = 128·128. */
    const double C = 512, N = 128.0 * 128;
    module_stats st = count("nonlocal", 512, 128, 128);
    ck_assert_double_eq(st.macs, 4 * N * C * C + 2 * N * N * C);
    ck_assert(fabs(st.macs / 292e9 - 1) < 0.05);
    ck_assert_double_eq(st.params, 4 * (C * C + C)); /* weights + (folded) biases */
    ck_assert(st.arena_bytes - st.input_bytes < 0.5 * N * N * 4); /* never the N×N map (1 GiB here) */
    module_stats_free(&st);
    st = count("nonlocal_r2", 512, 128, 128);
    ck_assert_double_eq(st.macs, 4 * N * C * C / 2 + 2 * N * N * C / 2);
    module_stats_free(&st);
}
END_TEST

START_TEST(eanet_macs_as_the_papers_count) {
    /* conv1 and conv2 (1×1 C→C) and the two memories (C→S, S→C) with S = 64: 2·N·C² + 2·N·C·S. */
    const double C = 512, N = 128.0 * 128, S = 64;
    module_stats st = count("eanet", 512, 128, 128);
    ck_assert_double_eq(st.macs, 2 * N * C * C + 2 * N * C * S);
    ck_assert(fabs(st.macs / 9.2e9 - 1) < 0.051); /* 9.66 G: see docs/efficiency.md */
    module_stats_free(&st);
}
END_TEST

START_TEST(ccnet_and_spatial_bias_counts) {
    /* RCCA, recurrence 2: per pass q, k (C→C/8), v (C→C) and H+W keys per pixel with C/8 + C channels;
     * the shared weights count once. */
    const double C = 512, H = 96, W = 64, N = H * W;
    module_stats st = count("ccnet", 512, 96, 64);
    ck_assert_double_eq(st.macs, 2 * (2 * N * C * C / 8 + N * C * C + N * (H + W) * (C / 8 + C)));
    ck_assert_double_eq(st.params, 2 * (C * C / 8 + C / 8) + C * C + C);
    module_stats_free(&st);
    st = count("spatial_bias", 512, 96, 64);
    ck_assert_double_eq(st.macs, N * C * 5 + 3 * 100 * 100 * 3);
    ck_assert_double_eq(st.params, C * 5 + 5 + 100 * 100 * 3 + 100);
    module_stats_free(&st);
}
END_TEST

START_TEST(every_module_runs_on_a_small_input) {
    for (int i = 0; i < N_MODULES; i++) {
        module_stats st;
        sa_error err = {0};
        int code = module_bench(MODULES[i].name, 24, 13, 19, 2, 2, &st, &err);
        ck_assert_msg(code == 0, "%s: %s", MODULES[i].name, err.msg);
        ck_assert(st.runs == 2 && st.median_s >= 0 && st.min_s <= st.max_s);
        ck_assert(st.macs > 0 && st.params > 0 && st.arena_bytes > st.input_bytes);
        ck_assert(st.n_log > 0);
        module_stats_free(&st);
    }
    module_stats st;
    sa_error err = {0};
    ck_assert_int_eq(module_bench("no_such_module", 8, 8, 8, 0, 0, &st, &err), SA_EXIT_USAGE);
}
END_TEST

/* Runs `segattn bench --random-weights --json ARGS` on the tiny model; its one line goes to `line`. */
static void bench_json(const char *args, char *line, int n) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s bench --random-weights --json %s -c tests/data/tiny_r101_isanet/model.json",
             segattn_bin(), args);
    FILE *p = popen(cmd, "r");
    ck_assert(p != NULL);
    line[0] = 0;
    ck_assert(fgets(line, n, p) != NULL);
    ck_assert_int_eq(pclose(p), 0);
}

/* The number after "key": at or after `from` (a JSON line, or a part of one). */
static double json_number(const char *from, const char *key) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\": ", key);
    const char *at = from ? strstr(from, pattern) : NULL;
    ck_assert_msg(at != NULL, "no %s in %s", key, from ? from : "(nothing)");
    return strtod(at + strlen(pattern), NULL);
}

/* `segattn bench --scaling`: the 1-thread runs alternate with the others in one process (the model
 * replans its arena at every switch), and the JSON line carries both and their ratio. */
START_TEST(bench_scaling_reports_both_thread_counts) {
    char line[2048], cmd[1024];
    bench_json("--scaling -r 2 -t 2 --size 37x45", line, sizeof line);
    const char *one = strstr(line, "\"one_thread\"");
    double min2 = json_number(line, "min_s"), min1 = json_number(one, "min_s"), ratio = json_number(line, "scaling");
    ck_assert_msg(min2 > 0 && min1 > 0 && fabs(ratio * min2 - min1) <= 5e-5 * (1 + ratio) + 1e-6 /* both printed to 0.1 ms */, "%s", line);
    /* With --profile: every layer's fastest run on each thread count, and their sums. */
    snprintf(cmd, sizeof cmd, "%s bench --random-weights --scaling --profile -r 2 -t 2 --size 37x45 -c tests/data/tiny_r101_isanet/model.json",
             segattn_bin());
    FILE *p = popen(cmd, "r");
    ck_assert(p != NULL);
    int layers = 0, sums = 0;
    while (fgets(line, sizeof line, p)) {
        double ms1, ms2, speedup;
        char name[128];
        if (sscanf(line, "%127s %lf %lf %lfx", name, &ms1, &ms2, &speedup) == 4 &&
            (strncmp(name, "backbone.", 9) == 0 || strncmp(name, "decode_head.", 12) == 0)) {
            /* both printed to a microsecond: the ratio is checked where that rounding is small */
            ck_assert_msg(ms1 > 0 && ms2 > 0 && (ms2 < 0.1 || fabs(speedup - ms1 / ms2) < 0.02 * speedup), "%s", line);
            layers++;
        }
        if (sscanf(line, "sum over layers %lf %lf %lfx", &ms1, &ms2, &speedup) == 3)
            sums++, ck_assert_msg(ms1 > 0 && ms2 > 0 && fabs(speedup - ms1 / ms2) < 0.01 * speedup, "%s", line);
    }
    ck_assert_int_eq(pclose(p), 0);
    ck_assert_msg(layers >= 10 && sums == 1, "%d layer lines, %d sums", layers, sums);
    /* Plain --profile still sums every layer over the runs: its ms/run column is not all zeros. */
    snprintf(cmd, sizeof cmd, "%s bench --random-weights --profile -r 2 --size 37x45 -c tests/data/tiny_r101_isanet/model.json",
             segattn_bin());
    p = popen(cmd, "r");
    ck_assert(p != NULL);
    double total = 0;
    layers = 0;
    while (fgets(line, sizeof line, p)) {
        double ms;
        char name[128];
        if (sscanf(line, "%127s %lf", name, &ms) == 2 && strncmp(name, "backbone.", 9) == 0) total += ms, layers++;
    }
    ck_assert_int_eq(pclose(p), 0);
    ck_assert_msg(layers >= 10 && total > 0, "%d layer lines, %g ms in all", layers, total);
}
END_TEST

/* `--min-time` goes on past -r until the timed runs add up to that many seconds; the JSON line counts
 * the runs, and with --scaling carries the pairs' speed-ups, sorted, and their median. */
START_TEST(bench_min_time_adds_runs) {
    static char line[1 << 17]; /* a pair's speed-up takes 7 characters, and a second holds hundreds of pairs */
    char cmd[1024];
    bench_json("--scaling --min-time 1 -r 2 -t 2 --size 37x45", line, sizeof line);
    ck_assert_msg(strchr(line, '\n') != NULL, "the JSON line is longer than %zu characters", sizeof line);
    const char *one = strstr(line, "\"one_thread\"");
    int runs = (int)json_number(line, "runs");
    double min2 = json_number(line, "min_s"), max2 = json_number(line, "max_s");
    double min1 = json_number(one, "min_s"), max1 = json_number(one, "max_s"), pairs = json_number(line, "scaling_pairs_median");
    /* The runs took at least a second in all, and no run more than its maximum. */
    ck_assert_msg(runs > 2 && runs * (max1 + max2) >= 1.0, "%s", line);
    /* A pair's speed-up lies between the extremes of the two series. */
    ck_assert_msg(pairs > 0 && pairs >= min1 / max2 - 1e-3 && pairs <= max1 / min2 + 1e-3, "%s", line);
    /* The list: one speed-up per run, ascending, its middle one the median above. */
    const char *at = strstr(line, "\"scaling_pairs\": [");
    ck_assert_msg(at != NULL, "%s", line);
    at += strlen("\"scaling_pairs\": [");
    double prev = 0, middle = -1;
    int n = 0;
    for (char *end;; at = end + (*end == ',')) {
        double x = strtod(at, &end);
        if (end == at) break;
        ck_assert_msg(x >= prev, "pair %d: %g after %g", n, x, prev);
        if (n == runs / 2) middle = x;
        prev = x, n++;
    }
    ck_assert_msg(*at == ']' && n == runs, "%d pairs for %d runs: %s", n, runs, line);
    ck_assert_double_eq_tol(middle, pairs, 1e-9);
    snprintf(cmd, sizeof cmd, "%s bench --all --min-time 1 -r 1 2>/dev/null", segattn_bin());
    ck_assert_int_eq(run_status(cmd), 2); /* modules are timed by -r alone */
    snprintf(cmd, sizeof cmd, "%s bench --min-time -1 -r 1 2>/dev/null", segattn_bin());
    ck_assert_int_eq(run_status(cmd), 2);
}
END_TEST

Suite *module_bench_suite(void) {
    Suite *s = suite_create("module_bench");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, nonlocal_macs_as_the_papers_count);
    tcase_add_test(tc, eanet_macs_as_the_papers_count);
    tcase_add_test(tc, ccnet_and_spatial_bias_counts);
    tcase_add_test(tc, every_module_runs_on_a_small_input);
    tcase_add_test(tc, bench_scaling_reports_both_thread_counts);
    tcase_add_test(tc, bench_min_time_adds_runs);
    suite_add_tcase(s, tc);
    return s;
}
