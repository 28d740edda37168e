"""Read journals back with plain SQLite (not fanlog's reader), for counting what was stored."""

from __future__ import annotations

import glob
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any


def journals_of(rank_dir: str | Path) -> list[str]:
    """Every journal file of a rank directory (journal.sqlite, journal.2.sqlite, ...)."""
    found = glob.glob(os.path.join(glob.escape(str(rank_dir)), "journal*.sqlite"))
    return sorted(found, key=lambda p: (len(p), p))


def query(path: str | Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def count(path: str | Path, key: str | None = None) -> int:
    if key is None:
        return int(query(path, "SELECT COUNT(*) FROM records")[0][0])
    return int(query(path, "SELECT COUNT(*) FROM records WHERE key = ?", key)[0][0])


def meta(path: str | Path) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in query(path, "SELECT key, value FROM meta")}


def fanlog_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`python -m fanlog.cli ARGS` in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "FANLOG_SAVEDIR"}
    done = subprocess.run(
        [sys.executable, "-m", "fanlog.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )
    if check and done.returncode != 0:
        raise AssertionError(f"fanlog {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done
