/* The checkpoint converter (scripts/convert_mmseg.py, issue 6): runs tests/convert/test_convert.py, which
 * needs Debian's python3 with torch (python3-torch) to make the checkpoints it converts. Its per-check
 * output goes to a log; on failure the failing lines are printed. */
#include <unistd.h>

#include "testutil.h"

START_TEST(convert_checkpoints) {
    ck_assert_msg(run_status("/usr/bin/python3 -c 'import torch, numpy, PIL' >/dev/null 2>&1") == 0,
                  "tests/convert needs /usr/bin/python3 with torch, numpy and PIL "
                  "(apt-get install python3-torch python3-numpy python3-pil)");
    char log[128], cmd[512];
    snprintf(log, sizeof log, "/tmp/segattn_convert_test_%d.log", (int)getpid());
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/convert/test_convert.py >%s 2>&1", log);
    int status = run_status(cmd);
    if (status != 0) {
        snprintf(cmd, sizeof cmd, "grep -v '^ok ' %s | tail -n 40 >&2", log);
        run_status(cmd);
    }
    remove(log);
    ck_assert_msg(status == 0, "tests/convert/test_convert.py failed (exit %d); failing checks above", status);
}
END_TEST

Suite *convert_suite(void) {
    Suite *s = suite_create("convert");
    TCase *t = tcase_create("convert_mmseg.py");
    tcase_set_timeout(t, 900);
    tcase_add_test(t, convert_checkpoints);
    suite_add_tcase(s, t);
    return s;
}
