# gpukit's front door. `make demo` and `make test` install what is missing (Debian packages),
# configure, build and run; the other targets are for day-to-day work.
BUILD ?= build/release
JOBS ?= $(shell nproc)

.PHONY: demo test build bench deps clean format install

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

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build
