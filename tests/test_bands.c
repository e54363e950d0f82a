/* Work bands hand out every item exactly once, whatever the thread count, also when threads steal. */
#include <check.h>
#include <omp.h>
#include <stdlib.h>

#include "bands.h"

static const int CASES[][2] = {{0, 2}, {1, 2}, {5, 8}, {1000, 1}, {1000, 2}, {1000, 3}, {997, 7}, {5000, 70}};

START_TEST(every_item_once) {
    int n = CASES[_i][0], threads = CASES[_i][1];
    int *seen = calloc((size_t)n + 1, sizeof *seen), *by = calloc((size_t)n + 1, sizeof *by), stolen = 0;
    work_bands wb;
    bands_init(&wb, n, threads);
#pragma omp parallel num_threads(threads) reduction(+ : stolen)
    {
        int t = omp_get_thread_num();
        /* thread 0 dawdles, so the others run out and steal from its band */
        for (int item; (item = bands_next(&wb, t)) >= 0;) {
            if (t == 0 && threads > 1)
                for (volatile int spin = 0; spin < 20000; spin++) {}
#pragma omp atomic
            seen[item]++;
            by[item] = t;
        }
    }
    for (int i = 0; i < n; i++) {
        ck_assert_msg(seen[i] == 1, "item %d of %d taken %d times with %d threads", i, n, seen[i], threads);
        int owner = (int)((long long)i * (threads < BANDS_MAX ? threads : BANDS_MAX) / (n ? n : 1));
        stolen += by[i] != owner;
    }
    if (threads == 2 && n == 1000) ck_assert_msg(stolen > 0, "no item of the slow thread's band was taken by the other");
    free(seen), free(by);
}
END_TEST

/* band_front names the item the next front take returns, whichever end the earlier takes came from. */
START_TEST(front_is_next_front_take) {
    work_band b;
    band_init(&b, 3, 9);
    ck_assert_int_eq(band_front(&b), 3);
    ck_assert_int_eq(band_take(&b, 1), 8);
    ck_assert_int_eq(band_front(&b), 3);
    for (int want = 3; want < 8; want++) {
        ck_assert_int_eq(band_front(&b), want);
        ck_assert_int_eq(band_take(&b, 0), want);
    }
    ck_assert_int_eq(band_front(&b), -1);
    ck_assert_int_eq(band_take(&b, 0), -1);
    band_init(&b, 4, 4);
    ck_assert_int_eq(band_front(&b), -1);
}
END_TEST

Suite *bands_suite(void) {
    Suite *s = suite_create("bands");
    TCase *t = tcase_create("items");
    tcase_add_loop_test(t, every_item_once, 0, (int)(sizeof CASES / sizeof CASES[0]));
    tcase_add_test(t, front_is_next_front_take);
    suite_add_tcase(s, t);
    return s;
}
