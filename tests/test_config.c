/* Config defaults that change inference: "test_scale" applies unless --scale overrides it or says none. */
#include <unistd.h>

#include "config.h"
#include "testutil.h"

START_TEST(test_scale_is_parsed_and_checked) {
    model_cfg cfg;
    sa_error err = {0};
    const char *base = "{\"backbone\": {\"type\": \"ResNetV1c\", \"depth\": 18}, \"decode_head\": {\"type\": \"fcn\", "
                       "\"num_classes\": 3, \"in_channels\": 512, \"in_index\": 3, \"channels\": 8}, \"test_scale\": %s}";
    char text[512];
    snprintf(text, sizeof text, base, "[2048, 512]");
    ck_assert_int_eq(config_parse(text, strlen(text), "t.json", &cfg, &err), 0);
    ck_assert_int_eq(cfg.test_scale[0], 2048);
    ck_assert_int_eq(cfg.test_scale[1], 512);
    config_free(&cfg);
    snprintf(text, sizeof text, base, "[2048]");
    ck_assert_int_eq(config_parse(text, strlen(text), "t.json", &cfg, &err), SA_EXIT_MODEL);
    ck_assert_msg(strstr(err.msg, "t.json: test_scale:") != NULL, "%s", err.msg);
}
END_TEST

START_TEST(test_scale_default_equals_explicit_scale) {
    const char *dir = "tests/data/tiny_r18_ccnet";
    char cmd[1024];
    int pid = (int)getpid();
    snprintf(cmd, sizeof cmd,
             "sed 's/\"align_corners\"/\"test_scale\": [120, 60], \"align_corners\"/' %s/model.json > /tmp/sa_ts_%d.json",
             dir, pid);
    ck_assert_int_eq(run_status(cmd), 0);
    static const char *variants[3] = {"", "--scale 120,60", "--scale none"};
    for (int v = 0; v < 3; v++) {
        char fixed[1100];
        snprintf(fixed, sizeof fixed,
                 "%s predict -q --force -t 2 -c /tmp/sa_ts_%d.json -w %s/weights.safetensors %s --format index "
                 "-o /tmp/sa_ts_%d_%d.png %s/input1.png",
                 getenv("SEGATTN_BIN") ? getenv("SEGATTN_BIN") : "./segattn", pid, dir, variants[v], pid, v, dir);
        ck_assert_msg(run_status(fixed) == 0, "%s", fixed);
    }
    snprintf(cmd, sizeof cmd, "cmp -s /tmp/sa_ts_%d_0.png /tmp/sa_ts_%d_1.png", pid, pid);
    ck_assert_msg(run_status(cmd) == 0, "test_scale default differs from --scale 120,60");
    snprintf(cmd, sizeof cmd,
             "%s predict -q --force -t 2 -c %s/model.json -w %s/weights.safetensors --format index -o /tmp/sa_ts_%d_3.png "
             "%s/input1.png && cmp -s /tmp/sa_ts_%d_2.png /tmp/sa_ts_%d_3.png",
             getenv("SEGATTN_BIN") ? getenv("SEGATTN_BIN") : "./segattn", dir, dir, pid, dir, pid, pid);
    ck_assert_msg(run_status(cmd) == 0, "--scale none differs from a config without test_scale");
    snprintf(cmd, sizeof cmd, "cmp -s /tmp/sa_ts_%d_0.png /tmp/sa_ts_%d_3.png", pid, pid);
    ck_assert_msg(run_status(cmd) != 0, "the test scale changed nothing: the test cannot tell");
    snprintf(cmd, sizeof cmd, "rm -f /tmp/sa_ts_%d*", pid);
    run_status(cmd);
}
END_TEST

Suite *config_suite(void) {
    Suite *s = suite_create("config");
    TCase *t = tcase_create("defaults");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_scale_is_parsed_and_checked);
    tcase_add_test(t, test_scale_default_equals_explicit_scale);
    suite_add_tcase(s, t);
    return s;
}
