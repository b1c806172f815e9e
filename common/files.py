"""Files written atomically: a crash leaves the old file or the new one, never a partial one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Create ``path`` atomically: ``write(temporary_path)`` fills a temporary file in the same directory
    (same suffix, so writers that pick a format by suffix work), which is flushed to disk and moved over
    ``path`` with ``os.replace``. A crash or ``kill -9`` at any moment leaves the previous file or the new
    one, never a partial file. Parent directories are created. Returns ``path``.

    Raises:
        OSError: the directory or the file cannot be written (ENOSPC, EDQUOT, EROFS, EIO, ...) or ``write``
            raised it; the temporary file is removed and a previous file at ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                             dir=path.parent)
    os.close(descriptor)
    try:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path
