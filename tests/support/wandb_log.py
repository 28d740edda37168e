"""Read what an offline W&B run stored, from its ``run-<id>.wandb`` transaction log.

wandb 0.31 has no Python reader for the file's framing (a leveldb-style log: a 7-byte
``:W&B`` header, then 32 KiB blocks of chunks, each with a crc32 over type and data, a
uint16 length and a uint8 type FULL/FIRST/MIDDLE/LAST), so this walks it and parses each
record with W&B's own protobuf ``wandb_internal_pb2.Record``. fanlog's tests and benchmarks
use it to check what an offline run really holds; fanlog itself never calls it, so it lives
here rather than in the package (the core names no tracker).
"""

from __future__ import annotations

import glob
import json
import struct
import time
import zlib
from pathlib import Path
from typing import Any


def read_transaction_log(path: str) -> list[Any]:
    """Every protobuf ``Record`` of a ``.wandb`` file, in order, each checked against its CRC.

    Raises ValueError for a file that is not a transaction log or whose checksums fail.
    """
    from wandb.proto import wandb_internal_pb2

    with open(path, "rb") as handle:
        data = handle.read()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    block, records, pending, pos = 32 * 1024, [], b"", 7
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block trailer
            pos += left
            continue
        checksum, length, chunk_type = struct.unpack("<IHB", data[pos : pos + 7])
        if chunk_type == 0 and length == 0:  # zero padding up to the end of the block
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        if zlib.crc32(bytes([chunk_type]) + chunk) & 0xFFFFFFFF != checksum:
            raise ValueError(f"{path}: bad checksum at byte {pos}")
        pos += 7 + length
        pending = chunk if chunk_type in (1, 2) else pending + chunk
        if chunk_type in (1, 4):  # FULL or LAST: a complete record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def offline_history(savedir: Path) -> list[dict[str, Any]]:
    """The history rows (key -> value) of the one offline W&B run under `savedir`, read once
    the run has written its exit record (W&B's service writes the file after the run)."""
    (path,) = glob.glob(str(savedir / "wandb" / "**" / "offline-run-*" / "run-*.wandb"), recursive=True)
    deadline = time.monotonic() + 60
    records: list[Any] = []
    while time.monotonic() < deadline:
        try:
            records = read_transaction_log(path)
        except ValueError:  # caught mid-write
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        time.sleep(0.1)
    return [
        {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
