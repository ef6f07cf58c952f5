#!/usr/bin/env bash
# libomp for macOS wheels, used by [tool.cibuildwheel.macos] in pyproject.toml.
#
#   macos_libomp.sh install            install Homebrew's libomp (setup.py finds it by itself;
#                                      delocate copies it into the wheel)
#   macos_libomp.sh deployment-target  print the minimum macOS version of the installed libomp,
#                                      for MACOSX_DEPLOYMENT_TARGET: a wheel tagged lower than its
#                                      vendored library would install on systems where it cannot load
#
# Builds one architecture per run: the native one (CI uses a native runner per architecture).
set -euo pipefail

libomp_dylib() {
    local prefix
    prefix=$(brew --prefix libomp 2>/dev/null) || return 1
    [ -f "$prefix/lib/libomp.dylib" ] && echo "$prefix/lib/libomp.dylib"
}

case "${1:-}" in
    install)
        export HOMEBREW_NO_AUTO_UPDATE=1 HOMEBREW_NO_INSTALL_CLEANUP=1
        brew install libomp
        lib=$(libomp_dylib) || { echo "macos_libomp.sh: libomp.dylib not found after install" >&2; exit 1; }
        echo "libomp: $lib (minimum macOS $(bash "$0" deployment-target))"
        ;;
    deployment-target)
        minos=""
        if lib=$(libomp_dylib); then
            # LC_BUILD_VERSION carries "minos X.Y"; older dylibs use LC_VERSION_MIN_MACOSX "version X.Y".
            minos=$(otool -l "$lib" | awk '
                /LC_BUILD_VERSION/ {want = "minos"}
                /LC_VERSION_MIN_MACOSX/ {want = "version"}
                want != "" && $1 == want {print $2; exit}')
        fi
        if [ -z "$minos" ]; then
            # Not installed yet (cibuildwheel evaluates the environment once before before-all):
            # Homebrew builds for the running macOS, so that is the answer it will give.
            minos="$(sw_vers -productVersion | cut -d. -f1).0"
        fi
        echo "$minos"
        ;;
    *)
        echo "usage: $0 install|deployment-target" >&2
        exit 2
        ;;
esac
