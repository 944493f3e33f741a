"""Files: a data directory the server creates is 0700, the SQLite database 0600 (with a loose umask too)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from tests.conftest import LiveServer


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_directory_and_database_are_private(server_factory: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "var"
    env = {"TIDINGS_DATA_DIR": str(data_dir), "TIDINGS_SECRET_KEY": ""}
    srv: LiveServer = server_factory(env=env, start=False)
    srv.env["TIDINGS_DATA_DIR"] = str(data_dir)
    srv.env.pop("TIDINGS_SECRET_KEY")
    srv.start()
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "tidings.db") == 0o600
    assert mode(data_dir / "secret_key") == 0o600
    others = [p.name for p in data_dir.iterdir() if mode(p) & 0o077]
    assert others == [], others


def test_an_existing_world_readable_database_is_tightened(server_factory: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "old"
    data_dir.mkdir()
    (data_dir / "tidings.db").touch(mode=0o644)
    (data_dir / "tidings.db").chmod(0o644)
    srv: LiveServer = server_factory(env={"TIDINGS_DATA_DIR": str(data_dir)}, data_dir=data_dir)
    assert srv.proc is not None
    assert mode(data_dir / "tidings.db") == 0o600
