"""What the commands share: the one-line usage error, argument types, thread setup."""
import argparse

from cnnext._validation import check_float, check_int

PROG = "cnnext"


class UsageError(Exception):
    """A problem with the user's input: reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr (no usage dump) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


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


def set_threads(n):
    """Use ``n`` threads in cnnext's kernels and in the BLAS libraries loaded (numpy's included)."""
    from threadpoolctl import threadpool_limits

    import cnnext

    cnnext.set_num_threads(n)
    threadpool_limits(limits=n, user_api="blas")


def check_plot_available():
    """Raise UsageError unless matplotlib can be imported (``--plot``)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'cnnext[plot]' (or matplotlib)") from None
