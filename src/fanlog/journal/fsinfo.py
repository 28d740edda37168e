"""Which file system a save dir is on, and how the journal is opened there.

SQLite's WAL mode keeps its index in a shared-memory file (``-shm``) that other
processes map. On a network file system (NFS, Lustre, GPFS, BeeGFS, CIFS, ...) that
mapping is not coherent between hosts, and its locks may be missing. There the journal
is opened with ``locking_mode=EXCLUSIVE``: WAL without shared memory, the writer's
connection holding the database for the life of the run. See docs/concepts.md.
"""

from __future__ import annotations

import os
import re

NETWORK_FILE_SYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "lustre",
        "gpfs",
        "beegfs",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "cephfs",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.cephfs",
        "fuse.sshfs",
        "fuse.beegfs",
        "afs",
        "ocfs2",
        "gfs2",
        "panfs",
        "wekafs",
        "9p",
        "fuse.juicefs",
        "fuse.s3fs",
        "fuse.gcsfuse",
    }
)
FS_OVERRIDE_ENV = "FANLOG_JOURNAL_FS"
"""Set to a file system type (``nfs``, ``ext4``, ...) to skip the detection (tests, odd mounts)."""
MOUNTS = "/proc/mounts"

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def parse_mounts(text: str) -> list[tuple[str, str]]:
    """(mount point, file system type) pairs from the text of /proc/mounts."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            point = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[1])
            found.append((point, fields[2]))
    return found


def file_system_type(path: str, mounts_text: str | None = None) -> str:
    """The type of the file system that holds `path` (which need not exist yet).

    The mount with the longest mount point that contains `path` wins, as in the kernel.
    ``unknown`` when /proc/mounts cannot be read (not Linux).
    """
    if mounts_text is None:
        try:
            with open(MOUNTS, encoding="utf-8", errors="replace") as handle:
                mounts_text = handle.read()
        except OSError:
            return "unknown"
    target = os.path.realpath(path)
    best, best_type = "", "unknown"
    for point, fs_type in parse_mounts(mounts_text):
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fs_type
    return best_type


def journal_fs_type(path: str) -> str:
    """The file system type that decides the journal's mode: the override, else detected."""
    return os.environ.get(FS_OVERRIDE_ENV) or file_system_type(path)


def is_network(fs_type: str) -> bool:
    return fs_type.lower() in NETWORK_FILE_SYSTEMS
