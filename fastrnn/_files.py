"""Writing a file so that a crash at any moment leaves the old file or the new one."""

import os
import tempfile


def write_atomically(path, write):
    """Call `write(file)` on a temporary file beside `path`, fsync it, rename it over `path`.

    A failure or a kill at any point leaves `path` as it was; the temporary file is
    removed where the process lives to do so.
    """
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                    dir=directory)
    try:
        _default_permissions(tmp_path)
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _default_permissions(path):
    # mkstemp creates the file private (0600); give it what open() would give.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _fsync_directory(directory):
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
