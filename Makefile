# gpukit's front door. `make demo` and `make test` install what is missing (Debian packages),
# configure, build and run; the other targets are for day-to-day work.
BUILD ?= build/release
JOBS ?= $(shell nproc)

.PHONY: demo test build bench deps clean format install fuzz soak

demo:
	@bash scripts/deps.sh demo
	@bash scripts/demo.sh

test:
	@bash scripts/deps.sh test
	@bash scripts/ci.sh

build:
	@bash scripts/deps.sh demo
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

install: build
	cmake --install $(BUILD)

# Longer fuzzing than CI's: FUZZ_SECONDS per target (default 300); then the pool's property test
# (pool against its model on random cases, tests/unit/test_pool_prop.c) for PROP_SECONDS
# (default 600) with fresh seeds, under ASan+UBSan.
FUZZ_SECONDS ?= 300
PROP_SECONDS ?= 600
fuzz:
	@bash scripts/deps.sh test
	cmake -S . -B build/fuzz -DCMAKE_C_COMPILER=clang -DGK_FUZZ=ON -DGK_ASAN=ON -DGK_TESTS=OFF >/dev/null
	cmake --build build/fuzz -j $(JOBS)
	@for f in build/fuzz/fuzz_*; do n=$$(basename $$f); mkdir -p build/fuzz/runs/$$n; \
	  echo "== $$n"; $$f -max_total_time=$(FUZZ_SECONDS) -timeout=10 build/fuzz/runs/$$n fuzz/corpus/$${n#fuzz_} 2>&1 | tail -2 || exit 1; done
	cmake -S . -B build/prop -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGK_ASAN=ON -DGK_EXAMPLES=OFF >/dev/null
	cmake --build build/prop -j $(JOBS) --target test_pool_prop
	@echo "== test_pool_prop --seconds $(PROP_SECONDS)"
	build/prop/tests/test_pool_prop --seconds $(PROP_SECONDS)

# Longer concurrency, abuse and fault runs than CI's: the same test programs with SOAK_SCALE times
# their counts (GK_SOAK_SCALE), under ThreadSanitizer. Figures are printed; see docs/reliability.md.
SOAK_SCALE ?= 20
soak:
	@bash scripts/deps.sh test
	cmake -S . -B build/soak -DGK_TSAN=ON >/dev/null
	cmake --build build/soak -j $(JOBS)
	@GK_SOAK_SCALE=$(SOAK_SCALE) TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
	  ctest --test-dir build/soak -R '^test_(soak|export_abuse|loader_abuse|faults)$$' -V \
	  >build/soak/soak.log 2>&1; rc=$$?; \
	  grep -E '(faults|soak|abuse):|Passed|Failed|tests passed' build/soak/soak.log; exit $$rc

bench:
	@bash scripts/deps.sh bench
	@bash scripts/bench.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build
