"""``python -m cnnext``: the command line, in :mod:`cnnext.cli`."""
from cnnext.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
