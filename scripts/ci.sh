#!/usr/bin/env bash
# The whole test run behind `make test` and CI, in order:
#   1. clang-format check of every C file
#   2. gcc build with -Werror and the warning set of STYLE.md, then ctest
#   3. AddressSanitizer + UndefinedBehaviorSanitizer build, then ctest
#   4. ThreadSanitizer build, then ctest -L threads
#   5. valgrind (ctest -T memcheck) over the unit tests of the gcc build
#   6. a short libFuzzer run of every fuzz target (clang, ASan+UBSan); `make fuzz` runs longer
# It runs every stage even after a failure and ends with one line:
#   N passed, N failed, N skipped
# (a skipped test is one that exited 77, such as the GPU tests on a machine without a GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=${GK_JOBS:-$(nproc)}
out=build/ci
mkdir -p "$out"

passed=0 failed=0 skipped=0
failures=()

note() { printf '\n== %s\n' "$*"; }

# Adds the counts of a CTest JUnit file to the totals.
count_junit() {
    local stage=$1 file=$2
    if [ ! -s "$file" ]; then
        failed=$((failed + 1))
        failures+=("$stage: ctest produced no results")
        return
    fi
    local t f s
    t=$(grep -o 'tests="[0-9]*"' "$file" | head -1 | grep -o '[0-9]*')
    f=$(grep -o 'failures="[0-9]*"' "$file" | head -1 | grep -o '[0-9]*')
    s=$(grep -o 'skipped="[0-9]*"' "$file" | head -1 | grep -o '[0-9]*')
    passed=$((passed + t - f - s))
    failed=$((failed + f))
    skipped=$((skipped + s))
    if [ "$f" -gt 0 ]; then
        while read -r name; do failures+=("$stage: $name"); done < <(
            grep -o '<testcase name="[^"]*"[^>]*status="fail"' "$file" | sed 's/<testcase name="\([^"]*\)".*/\1/')
    fi
    echo "$stage: $((t - f - s)) passed, $f failed, $s skipped"
}

# Adds the counts of a ctest log (used for memcheck, which writes no JUnit file).
count_log() {
    local stage=$1 file=$2 line t f s
    line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$file" | tail -1)
    if [ -z "$line" ]; then
        failed=$((failed + 1))
        failures+=("$stage: ctest produced no results")
        return
    fi
    f=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    t=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
    s=$(grep -cE '\*\*\*Skipped|Not Run' "$file" || true)
    passed=$((passed + t - f - s))
    failed=$((failed + f))
    skipped=$((skipped + s))
    while read -r name; do [ -n "$name" ] && failures+=("$stage: $name"); done < <(
        grep -E '^\s+[0-9]+ - .*\(' "$file" | grep -v 'Not Run' | sed -E 's/^\s+[0-9]+ - //')
    echo "$stage: $((t - f - s)) passed, $f failed, $s skipped"
}

# build STAGE DIR CMAKE-ARGS...: configure and build; a failure counts as one failed test.
build() {
    local stage=$1 dir=$2
    shift 2
    if cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DGK_WERROR=ON "$@" >"$out/$stage-configure.log" 2>&1 &&
        cmake --build "$dir" -j "$jobs" >"$out/$stage-build.log" 2>&1; then
        return 0
    fi
    cat "$out/$stage-configure.log" "$out/$stage-build.log" | grep -E 'error|Error' | head -40
    failed=$((failed + 1))
    failures+=("$stage: build failed (see $out/$stage-build.log)")
    return 1
}

note "1/6 format (clang-format --dry-run --Werror)"
mapfile -t cfiles < <(git ls-files '*.c' '*.h' 2>/dev/null; git ls-files -o --exclude-standard '*.c' '*.h' 2>/dev/null)
if clang-format --dry-run --Werror "${cfiles[@]}" >"$out/format.log" 2>&1; then
    passed=$((passed + 1))
    echo "format: ${#cfiles[@]} files clean"
else
    head -40 "$out/format.log"
    failed=$((failed + 1))
    failures+=("format: run clang-format -i on the files above")
fi

note "2/6 gcc -Werror build and ctest"
if build gcc build/ci-gcc -DCMAKE_C_COMPILER=gcc; then
    ctest --test-dir build/ci-gcc -j "$jobs" --output-on-failure --output-junit "$root/$out/gcc.xml" >"$out/gcc-test.log" 2>&1
    grep -E 'Test +#|tests passed|FAILED|Failed' "$out/gcc-test.log" | tail -60
    count_junit gcc "$out/gcc.xml"
fi

note "3/6 AddressSanitizer + UBSan build and ctest"
if build asan build/ci-asan -DGK_ASAN=ON; then
    ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --test-dir build/ci-asan -j "$jobs" --output-on-failure --output-junit "$root/$out/asan.xml" >"$out/asan-test.log" 2>&1
    grep -E 'Test +#|tests passed|FAILED|Failed' "$out/asan-test.log" | tail -60
    count_junit asan "$out/asan.xml"
fi

note "4/6 ThreadSanitizer build and ctest -L threads"
if build tsan build/ci-tsan -DGK_TSAN=ON; then
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
        ctest --test-dir build/ci-tsan -j "$jobs" -L threads --output-on-failure --output-junit "$root/$out/tsan.xml" >"$out/tsan-test.log" 2>&1
    grep -E 'Test +#|tests passed|FAILED|Failed' "$out/tsan-test.log" | tail -60
    count_junit tsan "$out/tsan.xml"
fi

note "5/6 valgrind (ctest -T memcheck -L unit)"
if [ -d build/ci-gcc ] && [ -f build/ci-gcc/DartConfiguration.tcl ]; then
    ctest --test-dir build/ci-gcc -j "$jobs" -T memcheck -L unit --output-on-failure >"$out/valgrind-test.log" 2>&1
    grep -E 'MemCheck +#|tests passed|Defect|FAILED|Failed' "$out/valgrind-test.log" | tail -60
    count_log valgrind "$out/valgrind-test.log"
    # ctest lists defects after "Memory checking results:"; any defect fails the stage even if
    # a test's exit status missed it.
    if sed -n '/Memory checking results:/,$p' "$out/valgrind-test.log" | grep -qE ' - [0-9]+'; then
        failed=$((failed + 1))
        failures+=("valgrind: defects listed in $out/valgrind-test.log")
    fi
fi

note "6/6 fuzzing (clang libFuzzer, ${GK_FUZZ_SECONDS:-20} s per target)"
if build fuzz build/ci-fuzz -DCMAKE_C_COMPILER=clang -DGK_FUZZ=ON -DGK_ASAN=ON -DGK_TESTS=OFF; then
    for bin in build/ci-fuzz/fuzz_*; do
        [ -x "$bin" ] || continue
        name=$(basename "$bin")
        corpus=fuzz/corpus/${name#fuzz_}
        work=$out/fuzz-${name#fuzz_}
        mkdir -p "$work"
        if "$bin" -max_total_time="${GK_FUZZ_SECONDS:-20}" -timeout=10 -rss_limit_mb=2048 \
            -artifact_prefix="$out/" "$work" "$corpus" >"$out/$name.log" 2>&1; then
            passed=$((passed + 1))
            echo "$name: $(grep -o 'Done [0-9]* runs' "$out/$name.log" | tail -1), nothing found"
        else
            tail -30 "$out/$name.log"
            failed=$((failed + 1))
            failures+=("fuzz: $name found a crash (input saved under $out/)")
        fi
    done
fi

if [ ${#failures[@]} -gt 0 ]; then
    note "failures"
    printf '  %s\n' "${failures[@]}"
fi
echo
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
