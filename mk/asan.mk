# AddressSanitizer + UndefinedBehaviorSanitizer build of the program and the Check runner, in build/asan/.
#   make asan        builds build/asan/segattn and build/asan/test_units
#   make asan-test   runs the whole Check suite with the sanitized binary (SEGATTN_BIN=build/asan/segattn)
# Any sanitizer report aborts the process that hit it, so it fails the test that ran it; leaks too (LSan).
ASAN_DIR    = build/asan
ASAN_FLAGS  = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
ASAN_CFLAGS = $(filter-out -O3 -O2,$(CFLAGS)) -O2 $(ASAN_FLAGS)
ASAN_LIB_OBJ = $(LIB_SRC:src/%.c=$(ASAN_DIR)/%.o)
ASAN_CLI_OBJ = $(CLI_SRC:src/%.c=$(ASAN_DIR)/%.o)
# Sanitizer settings for the runs; tests/lsan.supp lists the leak reports that are not ours (see its header).
ASAN_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86:strict_string_checks=1:detect_stack_use_after_return=0 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=87 \
           LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:exitcode=88 \
           SEGATTN_BIN=$(ASAN_DIR)/segattn

.PHONY: asan asan-test
asan: $(ASAN_DIR)/segattn $(ASAN_DIR)/test_units

$(ASAN_DIR)/%.o: src/%.c src/*.h | $(ASAN_DIR)
	$(CC) $(ASAN_CFLAGS) -c $< -o $@
$(ASAN_DIR):
	mkdir -p $(ASAN_DIR)
$(ASAN_DIR)/libsegattn.a: $(ASAN_LIB_OBJ)
	ar rcs $@ $^
$(ASAN_DIR)/segattn: $(ASAN_CLI_OBJ) $(ASAN_DIR)/libsegattn.a
	$(CC) $(ASAN_CFLAGS) -o $@ $^ $(LDLIBS)
$(ASAN_DIR)/suites.h: $(TEST_SRC) | $(ASAN_DIR)
	sed -n 's/^Suite \*\([a-z0-9_]*\)_suite(void).*/SUITE(\1)/p' $(TEST_SRC) > $@
$(ASAN_DIR)/test_units: tests/run_tests.c $(TEST_SRC) tests/*.h $(ASAN_DIR)/suites.h $(ASAN_DIR)/libsegattn.a
	$(CC) $(ASAN_CFLAGS) -I$(ASAN_DIR) -Itests -o $@ tests/run_tests.c $(TEST_SRC) $(ASAN_DIR)/libsegattn.a $(LDLIBS) $(CHECK_LIBS)

# SEGATTN_PARITY_QUICK=1: the shipped-model parity runs one head (ccnet) instead of six, to keep CI short
# under the sanitizers; every generated parity vector still runs.
# CK_FORK=no: LeakSanitizer cannot stop the world in a child forked from a process that already has
# OpenMP threads (it exits 88 with no report), so the suites run in one process and its leaks are
# checked once, at exit; every end-to-end run of the sanitized binary is still checked on its own.
asan-test: asan
	$(ASAN_ENV) CK_FORK=no SEGATTN_PARITY_QUICK=1 $(ASAN_DIR)/test_units
