"""Private files: the data directory is created 0700, the SQLite database and the secret key are 0600."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

__all__ = ["ensure_private_dir", "ensure_private_file"]

logger = logging.getLogger("tidings.files")


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) if needed; a directory created here is readable by its owner only.

    An existing directory keeps its mode: it may be the operator's choice (``TIDINGS_DATA_DIR=/srv/shared``).
    """
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is filtered through the umask; make it exact


def ensure_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist; tighten an existing one readable by others."""
    ensure_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
            logger.warning("%s was accessible to other users (mode %o); changed to %o", path, mode, mode & 0o700)
        return
    os.close(fd)
