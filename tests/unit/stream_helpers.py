"""Hand-made volume streams, framed and checksummed like real ones, for hostile inputs."""

from __future__ import annotations

import hashlib
import json
import uuid

from dockyard.disk.volume_stream import MAGIC

Raw = tuple[bytes, object, bytes]  # type byte, JSON fields, what follows the line


def header(**fields: object) -> dict[str, object]:
    return {"snapshot": uuid.uuid4().hex, "base": None, **fields}


def directory(path: str, mode: int = 0o755) -> Raw:
    return b"D", {"path": path, "mode": mode, "mtime_ns": 0}, b""


def link(path: str, target: str) -> Raw:
    return b"L", {"path": path, "target": target}, b""


def gone(path: str) -> Raw:
    return b"X", {"path": path}, b""


def file(path: str, data: bytes = b"stream data", mode: int = 0o644) -> Raw:
    fields = {
        "path": path,
        "mode": mode,
        "mtime_ns": 0,
        "size": len(data),
        "extents": [[0, len(data)]] if data else [],
    }
    return b"F", fields, data + hashlib.sha256(data).hexdigest().encode() + b"\n"


def framed(head: object, records: list[Raw], *, checksum: bool = True) -> bytes:
    """A stream of ``records`` after ``head``, with an end record that checks out (or,
    without ``checksum``, one that does not)."""
    body = MAGIC + json.dumps(head).encode() + b"\n"
    for kind, fields, rest in records:
        body += kind + json.dumps(fields).encode() + b"\n" + rest
    digest = hashlib.sha256(body).hexdigest() if checksum else "0" * 64
    end = {"records": len(records), "bytes": len(body), "digest": digest}
    return body + b"E" + json.dumps(end).encode() + b"\n"
