"""What the commands share: the one-line usage error, argument types, memory and path checks, threads."""
import argparse
import os
import stat
import sys
import tempfile

from cnnext._config import _MAX_THREADS
from cnnext._validation import check_float, check_int

PROG = "cnnext"


class UsageError(Exception):
    """A problem with the user's input: reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr (no usage dump) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def _print_message(self, message, file=None):
        # argparse's own ignores a failed write; here a closed pipe (--help | head) reaches main,
        # which exits quietly with status 141 as after any other output
        if message:
            (file or sys.stderr).write(message)


def _argument_type(convert, check, expected):
    """An argparse type: ``check(convert(text))``, any failure reported as 'expected ..., got ...'."""

    def parse(text):
        try:
            return check(convert(text))
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return parse


positive_int = _argument_type(int, lambda v: check_int(v, "value", PROG, minimum=1), "a positive integer")
nonneg_int = _argument_type(int, lambda v: check_int(v, "value", PROG, minimum=0), "an integer >= 0")
positive_float = _argument_type(float, lambda v: check_float(v, "value", PROG, minimum=0.0, open_min=True),
                                "a positive number")
nonneg_float = _argument_type(float, lambda v: check_float(v, "value", PROG, minimum=0.0), "a number >= 0")
threads = _argument_type(int, lambda v: check_int(v, "value", PROG, minimum=1, maximum=_MAX_THREADS),
                         f"an integer from 1 to {_MAX_THREADS}")


def path_arg(text):
    """An argparse type for file and directory names: any string but the empty one."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got ''")
    return text


def _file_kind(mode):
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def check_input_file(path, what):
    """Raise UsageError unless ``path`` is an existing regular file (``what``: 'MODEL', '--input').

    Checked before opening: a FIFO or a device would block or never end.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{what} {path}: is {_file_kind(st.st_mode)}, not a file")


def check_output_file(path, option, target=None):
    """Raise UsageError unless a file can be written at ``path`` (checked before the long work).

    ``path`` must not be a directory, a FIFO or a device and its directory must exist and take a new
    file (a temporary file is created there and removed). ``target``: the file really written (for
    a symbolic link, what it points to), default ``path``.
    """
    target = os.path.abspath(path if target is None else target)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror or exc}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{option} {path}: is {_file_kind(st.st_mode)}; give a file name")
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise UsageError(f"{option} {path}: directory {directory} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".cnnext-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create a file in {directory} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(tmp)


def memory_limit():
    """Bytes of physical memory of this machine (16 GiB when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 16 << 30


def format_bytes(n):
    """``n`` bytes as a short text: '512 B', '3.2 GB', '1.4 PB'."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} EB"  # not reached


def check_memory(nbytes, what, advice):
    """Raise UsageError when ``nbytes`` (an estimate) exceed the machine's physical memory.

    Called before allocating: ``what`` names the options and their values ("--batch 1000000"),
    ``advice`` says what to change.
    """
    limit = memory_limit()
    if nbytes > limit:
        raise UsageError(f"{what}: this needs about {format_bytes(nbytes)} of memory, more than the "
                         f"{format_bytes(limit)} of this machine; {advice}")


def set_threads(n):
    """Use ``n`` threads in cnnext's kernels and in the BLAS libraries loaded (numpy's included)."""
    from threadpoolctl import threadpool_limits

    import cnnext

    cnnext.set_num_threads(n)  # ``n`` is in range: the ``threads`` argument type
    threadpool_limits(limits=n, user_api="blas")


def check_plot_available():
    """Raise UsageError unless matplotlib can be imported (``--plot``)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'cnnext[plot]' (or matplotlib)") from None
