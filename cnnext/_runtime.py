"""Which OpenMP runtimes the process has loaded (Linux: from /proc/self/maps; elsewhere unknown)."""

_NAMES = ("libgomp", "libomp", "libiomp")


def loaded_openmp_runtimes():
    """Return the set of paths of OpenMP runtime libraries mapped into this process.

    An empty set means none, or that this platform does not tell (only Linux is read).
    """
    try:
        with open("/proc/self/maps") as f:
            lines = f.readlines()
    except OSError:
        return frozenset()
    paths = set()
    for line in lines:
        path = line.split()[-1] if line.strip() else ""
        name = path.rsplit("/", 1)[-1]
        if path.startswith("/") and name.startswith(_NAMES):
            paths.add(path)
    return frozenset(paths)
