"""The ``cnnext`` command line: ``python -m cnnext COMMAND`` (or the ``cnnext`` script).

Commands
--------
train      train a small CNN (conv-relu-pool x2, linear) on the embedded 8x8 digits or on MNIST
evaluate   accuracy, loss and confusion matrix of a saved model on the test split
predict    predictions of a saved model for test images or for an .npy file
demo       the learn_dl tutorial example run on cnnext, and a timed batched convolution

One module per command (``train``, ``evaluate``, ``predict``, ``demo``; ``plot`` draws
``train --plot``), each with ``add_parser(subparsers)`` and ``run(args)`` over the library
(``cnnext.training`` and friends); ``_common`` and ``_data`` hold what they share. Nothing outside
this package (and ``cnnext.__main__``) imports it. Every command has ``--help``. Wrong arguments,
files and sizes print one line on stderr and exit with status 2, never a traceback; see ``main``
for the other exit statuses (141 when the output pipe is closed early).
"""
import argparse
import os
import sys

import numpy as np

from cnnext._version import __version__
from cnnext.cli import demo, evaluate, predict, train
from cnnext.cli._common import PROG, Parser, UsageError

__all__ = ["main"]

_DESCRIPTION = f"""\
cnnext {__version__}: a small, fast CNN package (Cython kernels, a torch-style API).

commands:
  train      train a small CNN on the embedded 8x8 handwritten digits (or MNIST with --data)
  evaluate   test accuracy, loss and confusion matrix of a saved model
  predict    predictions of a saved model on test images or an .npy file
  demo       the learn_dl tutorial example on cnnext, and a timed batched convolution

examples:
  python -m cnnext train                          # ~98% test accuracy in a few seconds
  python -m cnnext train --epochs 5 --optimizer sgd --lr 0.05 --plot curves.png
  python -m cnnext evaluate cnnext_digits.npz
  python -m cnnext predict cnnext_digits.npz --count 8
  python -m cnnext train --data ~/mnist --download --epochs 3   # MNIST IDX files

run 'python -m cnnext COMMAND --help' for the options of a command."""


def build_parser():
    """Return the argument parser of the command line."""
    parser = Parser(prog=PROG, description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cnnext {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in (train, evaluate, predict, demo):
        command.add_parser(sub)
    return parser


def main(argv=None):
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); return the exit status.

    0: done; 2: a usage error (bad argument, file or size), reported as one line on stderr; 141:
    standard output was closed early (e.g. piped into ``head``), stopped quietly like coreutils
    killed by SIGPIPE; 130: interrupted; 1: an internal error (a bug), reported as one line too
    (``CNNEXT_DEBUG=1`` shows its traceback).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = PROG
    try:
        try:
            parser = build_parser()
            if not argv:
                print(_DESCRIPTION)
                return 0
            args = parser.parse_args(argv)
            if args.command is None:
                parser.error("a command is required: train, evaluate, predict or demo")
            prog = f"{PROG} {args.command}"
            with np.errstate(all="ignore"):  # a diverging loss is reported as such, without numpy's warnings
                return args.run(args)
        finally:  # also after --help: a closed pipe shows here, not at exit as "Exception ignored ..."
            sys.stdout.flush()
    except BrokenPipeError:  # output piped into e.g. `head`, which has exited: stop quietly
        _silence_stdout()
        return 141
    except (UsageError, ValueError, OSError) as exc:
        _report(f"{prog}: error: {exc}")
        return 2
    except MemoryError as exc:
        _report(f"{prog}: error: not enough memory ({exc or 'MemoryError'})")
        return 2
    except KeyboardInterrupt:
        _report(f"{prog}: interrupted")
        return 130
    except Exception as exc:
        if os.environ.get("CNNEXT_DEBUG"):
            raise
        _report(f"{prog}: internal error: {type(exc).__name__}: {exc} (a bug in cnnext: please report it; "
                f"CNNEXT_DEBUG=1 shows the traceback)")
        return 1


def _report(line):
    """Print one line on stderr: a newline in an exception's text (e.g. a path) is shown escaped."""
    try:
        print(line.replace("\n", "\\n"), file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed too
        pass


def _silence_stdout():
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
