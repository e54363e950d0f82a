# segattn — `make` builds ./segattn; `make test` runs the Check suites and the end-to-end parity tests.
CC      ?= gcc
CFLAGS  ?= -O3 -march=x86-64-v3 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter -fopenmp -Isrc
LDLIBS  += -lcjson -lstb -lm -fopenmp
CHECK_LIBS = $(shell pkg-config --libs check)

# The library is every src/*.c except the command line (main.c, cli_*.c, cmd_*.c).
CLI_SRC = src/main.c $(wildcard src/cli_*.c src/cmd_*.c)
LIB_SRC = $(filter-out $(CLI_SRC),$(wildcard src/*.c))
LIB_OBJ = $(LIB_SRC:src/%.c=build/%.o)
CLI_OBJ = $(CLI_SRC:src/%.c=build/%.o)
TESTS   = tests/test_units

.PHONY: all test clean bench
all: segattn

build/%.o: src/%.c src/*.h | build
	$(CC) $(CFLAGS) -c $< -o $@
build:
	mkdir -p build

build/libsegattn.a: $(LIB_OBJ)
	ar rcs $@ $^

segattn: $(CLI_OBJ) build/libsegattn.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# One Check runner: every tests/test_*.c defines `Suite *NAME_suite(void)`; the list is generated.
TEST_SRC = $(wildcard tests/test_*.c)
build/suites.h: $(TEST_SRC) | build
	sed -n 's/^Suite \*\([a-z0-9_]*\)_suite(void).*/SUITE(\1)/p' $(TEST_SRC) > $@
tests/test_units: tests/run_tests.c $(TEST_SRC) tests/*.h build/suites.h build/libsegattn.a
	$(CC) $(CFLAGS) -Ibuild -Itests -o $@ tests/run_tests.c $(TEST_SRC) build/libsegattn.a $(LDLIBS) $(CHECK_LIBS)

test: segattn $(TESTS)
	./tests/test_units

bench: segattn
	bash scripts/bench.sh

clean:
	rm -rf build segattn $(TESTS)

# Extra targets (fuzz, asan, bench helpers) live in mk/*.mk so each concern keeps its own rules.
-include mk/*.mk
