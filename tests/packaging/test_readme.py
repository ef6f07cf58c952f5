"""Every python example of README.md runs as written (issue 13 item 12).

Each ```python block is saved as a script and run with this interpreter, in README order, in one
temporary directory (blocks may use files earlier ones or the CLI wrote). Before them, the README's
main job runs as ``python -m cnnext train --epochs 1`` (one epoch instead of twelve, to save time):
it writes the ``cnnext_digits.npz`` the examples load.

A block that needs an optional extra carries the marker ``<!-- readme-test: requires MOD ... -->``
on the line before its fence; it is skipped (and reported as skipped) when one of the named
modules cannot be imported. No other block may be skipped, and a marker with no block after it,
or naming no module, is an error.
"""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cnnext

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
_MARKER = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->")


def python_blocks(text):
    """Return [(line number, code, [required modules]), ...] of the ```python blocks of ``text``."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        line = lines[i]
        marker = _MARKER.fullmatch(line.strip())
        if marker:
            words = marker.group(1).split()
            if len(words) < 2 or words[0] != "requires":
                raise ValueError(f"README.md:{i + 1}: readme-test marker must be 'requires MODULE ...', "
                                 f"got {marker.group(1)!r}")
            if i + 1 >= len(lines) or lines[i + 1].strip() != "```python":
                raise ValueError(f"README.md:{i + 1}: a readme-test marker must be right before a "
                                 f"```python fence")
        if line.strip() == "```python":
            start = i + 1
            end = start
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if end == len(lines):
                raise ValueError(f"README.md:{i + 1}: unterminated ```python block")
            prev = _MARKER.fullmatch(lines[i - 1].strip()) if i else None
            requires = prev.group(1).split()[1:] if prev else []
            blocks.append((start, "\n".join(lines[start:end]) + "\n", requires))
            i = end
        i += 1
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(cnnext.__file__).resolve().parent.parent),
                                         env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The directory the examples run in, after the README's `cnnext train` (one epoch)."""
    d = tmp_path_factory.mktemp("readme")
    proc = subprocess.run([sys.executable, "-m", "cnnext", "train", "--epochs", "1", "--no-progress"],
                          cwd=d, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (d / "cnnext_digits.npz").is_file()
    return d


def test_blocks_are_found_and_markers_parsed():
    assert len(BLOCKS) >= 7
    marked = {tuple(req) for _, _, req in BLOCKS if req}
    assert ("torch",) in marked and ("dask", "distributed") in marked
    with pytest.raises(ValueError, match="right before"):
        python_blocks("<!-- readme-test: requires torch -->\n\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="requires MODULE"):
        python_blocks("<!-- readme-test: skip -->\n```python\nx = 1\n```\n")
    assert python_blocks("text\n<!-- readme-test: requires a b -->\n```python\nx = 1\n```\n") == [
        (3, "x = 1\n", ["a", "b"])]


@pytest.mark.parametrize("line,code,requires", BLOCKS, ids=[f"line{b[0]}" for b in BLOCKS])
def test_readme_python_block_runs(workdir, line, code, requires):
    missing = [m for m in requires if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"README.md line {line} needs {', '.join(missing)} (not installed)")
    script = workdir / f"readme_line{line}.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run([sys.executable, script.name], cwd=workdir, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"README.md line {line} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


def test_functions_the_readme_lists_exist():
    """The README's list of cnnext.functional additions names only functions that exist; those it
    says come "with their *_backward functions" have one."""
    import cnnext.functional as F

    text = README.read_text(encoding="utf-8")
    bullet = re.search(r"^- `cnnext\.functional` gains (.*?)(?=^\S|^- |\Z)", text, re.S | re.M)
    assert bullet, "README.md: the '- `cnnext.functional` gains ...' bullet is gone; update this test"
    body = " ".join(bullet.group(1).split())
    names = re.findall(r"`([a-z_0-9]+)`", body)
    assert names and all(hasattr(F, n) for n in names), [n for n in names if not hasattr(F, n)]
    with_backward, sep, _ = body.partition("*_backward")
    assert sep
    for name in re.findall(r"`([a-z_0-9]+)`", with_backward):
        assert hasattr(F, name + "_backward"), f"README says F.{name} has a backward function"
