#!/usr/bin/env bash
# Build cnnext's extensions with AddressSanitizer + UndefinedBehaviorSanitizer and run the whole test
# suite under them, in a temporary copy of the tree with its own virtual environment (the in-place
# .so files of the checkout are never touched).
#
# Two variants:
#   asan        -fsanitize=address,undefined -fno-omit-frame-pointer -g, Cython checks off as shipped
#               (setup.py appends its -O3 after CFLAGS, so this variant runs the optimised kernels;
#               CFLAGS' -O1 only reaches the OpenMP probe)
#   asan-debug  the same with CNNEXT_CYTHON_DEBUG=1: Cython bounds/wraparound/initialisation checks
#               on, -O1 -g (setup.py's debug flags)
#
# Python itself is not instrumented, so the sanitizer runtimes are LD_PRELOADed. Settings:
#   ASAN_OPTIONS=detect_leaks=0 (CPython keeps memory until exit by design), halt_on_error=1,
#     allocator_may_return_null=1 (tests ask for absurd sizes on purpose: numpy must see NULL and
#     raise MemoryError, as without ASan, instead of ASan aborting on "allocation-size-too-big")
#   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 (and -fno-sanitize-recover=undefined)
# Every report goes to a log file (log_path), so reports from subprocesses (multiprocessing, the CLI
# tests) are counted too. tests/kernels/test_pool_backward_bounds.py (out-of-bounds indices to max_pool2d_backward) runs
# on its own first: it must raise ValueError with no sanitizer report.
# torch is NOT installed in the sanitizer venv (its native code under a preloaded ASan runtime is
# not what is under test, and it is known to misbehave there): the torch agreement tests skip, as
# do the optional-extra tests (dask, mpi4py, matplotlib). CNNEXT_SANITIZER=1 is exported for tests
# that must know (RSS is meaningless under ASan's quarantine: the leak test checks tracemalloc only).
#
# Usage: tools/sanitize.sh [--variant asan|asan-debug|all] [--ref REV] [--keep] [--workdir DIR] [-- PYTEST ARGS...]
#   --ref REV  test the committed tree of REV (e.g. HEAD) instead of the working tree as it is
# Exit status: 0 when every variant built, the suite passed and no sanitizer report was written.
set -euo pipefail

variants="asan asan-debug"
keep=0
workdir=""
ref=""
pytest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --variant) shift; [ "$1" = all ] && variants="asan asan-debug" || variants="$1" ;;
        --keep) keep=1 ;;
        --ref) shift; ref="$1" ;;
        --workdir) shift; workdir="$1" ;;
        --) shift; pytest_args=("$@"); break ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "sanitize.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for v in $variants; do
    case "$v" in asan|asan-debug) ;; *) echo "sanitize.sh: unknown variant $v" >&2; exit 2 ;; esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "$ref" ]; then  # pin the commit now: HEAD may move while this runs
    ref=$(git -C "$root" rev-parse --verify "$ref^{commit}")
fi
PY=${PYTHON:-python3}
CC=${CC:-gcc}
export CC

# The runtimes the compiler links against: preloading exactly those avoids version mismatches.
libasan=$("$CC" -print-file-name=libasan.so)
libubsan=$("$CC" -print-file-name=libubsan.so)
for lib in "$libasan" "$libubsan"; do
    if [ ! -e "$lib" ]; then
        echo "sanitize.sh: $CC has no sanitizer runtime ($lib); install libasan/libubsan (e.g. gcc's)" >&2
        exit 2
    fi
done
libasan=$(readlink -f "$libasan")
libubsan=$(readlink -f "$libubsan")

if [ -z "$workdir" ]; then
    workdir=$(mktemp -d "${TMPDIR:-/tmp}/cnnext-sanitize.XXXXXX")
else
    mkdir -p "$workdir"
fi
cleanup() {
    if [ "$keep" = 0 ]; then rm -rf "$workdir"; else echo "sanitize.sh: kept $workdir"; fi
}
trap cleanup EXIT

echo "== sanitize.sh: work directory $workdir"
if [ -n "$ref" ]; then
    echo "== testing commit $ref"
else
    echo "== testing the working tree (on $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'))"
fi
echo "== runtimes: $libasan $libubsan"

# One venv for both variants: the build and test requirements, without torch.
venv="$workdir/venv"
"$PY" -m venv "$venv"
vpy="$venv/bin/python"
echo "== installing the build and test requirements (no torch) into $venv"
if ! { "$vpy" -m pip install --disable-pip-version-check --upgrade pip &&
       "$vpy" -m pip install --disable-pip-version-check \
           "setuptools>=77" "Cython>=3.1" "numpy>=2.0" "tqdm>=4.60" "threadpoolctl>=3.1" "pytest>=7" "hypothesis>=6.80"
     } >"$workdir/pip.log" 2>&1; then
    tail -30 "$workdir/pip.log"
    echo "sanitize.sh: pip install failed (log: $workdir/pip.log)" >&2
    exit 2
fi
if "$vpy" -c "import torch" 2>/dev/null; then
    echo "sanitize.sh: torch is importable in the sanitizer venv; it must not be" >&2
    exit 2
fi

copy_tree() {  # the working tree as git sees it (tracked + untracked, not ignored): no build outputs
    local dest=$1
    mkdir -p "$dest"
    if [ -n "$ref" ]; then
        git -C "$root" archive --format=tar "$ref" | tar -C "$dest" -xf -
    elif git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
        (cd "$root" && git ls-files -z --cached --others --exclude-standard \
            | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
            | tar --null -T - -cf -) | tar -C "$dest" -xf -
    else
        (cd "$root" && tar --exclude='*.so' --exclude='./build' --exclude='*.c' -cf - .) | tar -C "$dest" -xf -
    fi
}

san_flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1 -g"
declare -A result_build result_tests result_reports result_bounds result_warnings

# A sanitizer log file is a report when it holds an error ("ERROR: AddressSanitizer", a UBSan
# "runtime error:", any "SUMMARY:"). With allocator_may_return_null=1, ASan also logs a WARNING
# for each refused absurd allocation (tests ask for those on purpose): listed, not counted.
report_files() {  # report_files DIR: the log files in DIR that hold a sanitizer error
    find "$1" -maxdepth 1 \( -name 'asan.*' -o -name 'ubsan.*' \) -print0 \
        | xargs -0 -r grep -l -E 'ERROR: AddressSanitizer|runtime error:|SUMMARY: ' | sort || true
}
count_reports() { report_files "$1" | wc -l; }

run_sanitized() {  # run_sanitized TREE LOGDIR [PYTEST ARGS...]: pytest under the preloaded runtimes
    local tree=$1 logdir=$2
    shift 2
    (cd "$tree" && env \
        LD_PRELOAD="$libasan $libubsan" \
        ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:allocator_may_return_null=1:log_path=$logdir/asan:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1" \
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logdir/ubsan" \
        CNNEXT_SANITIZER=1 PYTHONFAULTHANDLER=1 \
        "$vpy" -m pytest -q -p no:cacheprovider "$@")
}
overall=0

for variant in $variants; do
    tree="$workdir/$variant"
    logs="$workdir/$variant-logs"
    mkdir -p "$logs"
    echo
    echo "== [$variant] copying the tree to $tree"
    copy_tree "$tree"
    debug=0
    [ "$variant" = asan-debug ] && debug=1
    echo "== [$variant] building (CNNEXT_CYTHON_DEBUG=$debug, CFLAGS=$san_flags)"
    if (cd "$tree" && CFLAGS="$san_flags" LDFLAGS="-fsanitize=address,undefined" \
            CNNEXT_CYTHON_DEBUG=$debug CNNEXT_OPENMP=auto \
            "$vpy" setup.py build_ext --inplace >"$logs/build.log" 2>&1); then
        result_build[$variant]=ok
    else
        result_build[$variant]=FAILED
        tail -40 "$logs/build.log"
        overall=1
        continue
    fi
    # every extension must really be instrumented
    for so in "$tree"/cnnext/_kernels/*.so; do
        # (grep -c reads all of nm's output: grep -q would SIGPIPE nm and trip pipefail)
        if [ "$(nm -D "$so" 2>/dev/null | grep -c "__asan_")" = 0 ]; then
            echo "sanitize.sh: $so is not instrumented with ASan" >&2
            result_build[$variant]="FAILED (not instrumented)"
            overall=1
        fi
    done
    [ "${result_build[$variant]}" = ok ] || continue

    # First, on its own: out-of-bounds indices given to max_pool2d_backward must be stopped by
    # validation (ValueError), with not a single sanitizer report.
    echo "== [$variant] out-of-bounds indices to max_pool2d_backward (tests/kernels/test_pool_backward_bounds.py)"
    mkdir -p "$logs/bounds"
    set +e
    run_sanitized "$tree" "$logs/bounds" tests/kernels/test_pool_backward_bounds.py -rA >"$logs/bounds/pytest.log" 2>&1
    bstatus=$?
    set -e
    nb=$(count_reports "$logs/bounds")
    nvalue=$(grep -c "^PASSED tests/kernels/test_pool_backward_bounds.py" "$logs/bounds/pytest.log" || true)
    result_bounds[$variant]="exit $bstatus, $nvalue tests passed (each bad index raised ValueError), $nb sanitizer reports"
    if [ "$bstatus" != 0 ] || [ "$nb" != 0 ]; then
        overall=1
        tail -30 "$logs/bounds/pytest.log"
        report_files "$logs/bounds" | head -3 | xargs -r head -40
    fi

    echo "== [$variant] running the test suite under ASan+UBSan"
    set +e
    run_sanitized "$tree" "$logs" "${pytest_args[@]}" >"$logs/pytest.log" 2>&1
    status=$?
    set -e
    # || true: a run stopped by a sanitizer may leave no summary line, and grep's failure must not end
    # the script (set -e, pipefail) before it reports
    result_tests[$variant]="exit $status: $( { grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed|error).* in ' "$logs/pytest.log" || true; } | tail -1 | tr -d '=' | sed 's/^ *//')"
    reports=$(report_files "$logs")
    n_reports=0
    if [ -n "$reports" ]; then
        n_reports=$(echo "$reports" | wc -l)
        echo "== [$variant] sanitizer reports:"
        for r in $reports; do
            echo "---- $r"
            head -60 "$r"
        done
    fi
    warnings=$(find "$logs" -maxdepth 1 \( -name 'asan.*' -o -name 'ubsan.*' \) -print0 \
        | xargs -0 -r cat | grep -c "WARNING: AddressSanitizer failed to allocate" || true)
    result_reports[$variant]=$n_reports
    result_warnings[$variant]=$warnings
    if [ "$status" != 0 ]; then
        echo "== [$variant] pytest output (tail):"
        tail -60 "$logs/pytest.log"
    fi
    if [ "$status" != 0 ] || [ "$n_reports" != 0 ]; then overall=1; fi
done

echo
echo "================ sanitize.sh summary ================"
printf '%-11s %-8s %-8s %s\n' variant build reports tests
for variant in $variants; do
    printf '%-11s %-8s %-8s %s\n' "$variant" "${result_build[$variant]:-?}" \
        "${result_reports[$variant]:--}" "${result_tests[$variant]:--}"
done
for variant in $variants; do
    echo "$variant, out-of-bounds indices to max_pool2d_backward: ${result_bounds[$variant]:-not run}"
done
for variant in $variants; do
    echo "$variant: ${result_warnings[$variant]:-0} absurd allocations refused (returned NULL -> MemoryError, as intended)"
done
echo "(python $("$vpy" -c 'import sys; print(sys.version.split()[0])'), $("$CC" --version | head -1), torch not installed: torch tests skipped)"
if [ "$overall" = 0 ]; then
    echo "RESULT: clean (no sanitizer report, suite passed)"
else
    echo "RESULT: FAILED"
fi
exit $overall
