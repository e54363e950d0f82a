# libFuzzer targets (clang -fsanitize=fuzzer,address,undefined) for the four parsers of untrusted input.
#   make fuzz-build                  builds tests/fuzz/bin/fuzz_{safetensors,config,image,list}
#   make fuzz [FUZZ_SECONDS=60]      runs each target for FUZZ_SECONDS (make -j2 fuzz: two at a time)
#   make fuzz-regress                replays the seeds and tests/fuzz/regress/ once through each target
# Each target starts from its seed corpus tests/fuzz/seeds/NAME (committed) and grows tests/fuzz/out/NAME
# (ignored). A crash stops the run and leaves the input as tests/fuzz/out/crash-NAME-*; make it a
# regression: copy it to tests/fuzz/regress/NAME/ (test_hostile.c replays that folder in `make test`).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_FLAGS    = -g -O1 -std=c11 -D_GNU_SOURCE -Isrc -fno-omit-frame-pointer \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_TARGETS  = safetensors config image list
FUZZ_BINS     = $(FUZZ_TARGETS:%=tests/fuzz/bin/fuzz_%)
# libFuzzer options: a slow input (over 10 s) or over 2 GiB of memory counts as a failure. A fixed seed
# makes a CI run repeat the mutation sequence that was checked before the submission (FUZZ_SEED=0: random).
FUZZ_SEED    ?= 1
FUZZ_RUN_OPTS = -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -seed=$(FUZZ_SEED)

# Only the sources each parser needs, so no OpenMP/BLAS is linked into the fuzzers.
FUZZ_SRC_safetensors = src/safetensors.c src/util.c
FUZZ_SRC_config      = src/config.c src/util.c
FUZZ_SRC_image       = src/image.c src/util.c tests/fuzz/stb_impl.c
FUZZ_SRC_list        = src/inputs.c src/util.c
FUZZ_LIBS_safetensors = -lcjson -lm
FUZZ_LIBS_config      = -lcjson -lm
FUZZ_LIBS_image       = -lm
FUZZ_LIBS_list        =

.PHONY: fuzz fuzz-build fuzz-regress   # fuzz-run-% is a pattern rule: never a file, so it always runs
fuzz-build: $(FUZZ_BINS)

tests/fuzz/bin/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/stb_impl.c src/*.c src/*.h
	@mkdir -p tests/fuzz/bin
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_SRC_$*) $(FUZZ_LIBS_$*)

fuzz: $(FUZZ_TARGETS:%=fuzz-run-%)

fuzz-run-%: tests/fuzz/bin/fuzz_%
	@mkdir -p tests/fuzz/out/$*
	@echo "fuzz: $* for $(FUZZ_SECONDS) s"
	$< $(FUZZ_RUN_OPTS) -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=tests/fuzz/out/crash-$*- \
	   $(if $(wildcard tests/fuzz/$*.dict),-dict=tests/fuzz/$*.dict) \
	   tests/fuzz/out/$* tests/fuzz/seeds/$* $(wildcard tests/fuzz/regress/$*) 2>tests/fuzz/out/$*.log \
	   || { tail -n 60 tests/fuzz/out/$*.log; exit 1; }
	@grep -E '^stat::number_of_executed_units|^Done' tests/fuzz/out/$*.log | tr '\n' ' '; echo

fuzz-regress: $(FUZZ_BINS)
	@mkdir -p tests/fuzz/out; for t in $(FUZZ_TARGETS); do \
	  files=$$(find tests/fuzz/seeds/$$t tests/fuzz/regress/$$t -type f 2>/dev/null); \
	  [ -z "$$files" ] || tests/fuzz/bin/fuzz_$$t $$files >/dev/null 2>tests/fuzz/out/regress-$$t.log \
	    || { tail -n 60 tests/fuzz/out/regress-$$t.log; exit 1; }; rm -f tests/fuzz/out/regress-$$t.log; done; echo "fuzz-regress: ok"
