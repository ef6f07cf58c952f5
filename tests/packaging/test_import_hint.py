"""A copy of the package without its compiled extensions fails to import with a hint (issue 13, item 12)."""
import pathlib
import shutil
import subprocess
import sys

import cnnext


def test_unbuilt_checkout_gives_build_hint(tmp_path):
    src = pathlib.Path(cnnext.__file__).parent
    shutil.copytree(src, tmp_path / "cnnext",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.c", "__pycache__"))
    proc = subprocess.run([sys.executable, "-c", "import cnnext"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: cnnext's compiled kernels are not built")
    assert "pip install -e ." in last and "build_ext --inplace" in last
