"""The stream format of :class:`~dockyard.testing.fake_volumes.FakeVolumes`: its own, as
strict as the real one (:mod:`dockyard.disk.volume_stream`) about what it accepts, so that
the contract suite can send malformed streams to both."""

from __future__ import annotations

import hashlib
import json
import re
import stat
from dataclasses import dataclass

from dockyard.disk.volume_stream import StreamError
from dockyard.disk.volume_stream.format import check_path
from dockyard.disk.volumes import (
    Snapshot,
    check_tag,
)
from dockyard.errors import InvalidInput

# A tree as a snapshot keeps it: relative path -> (st_mode with the type, the file's bytes or
# the link's target; nothing for a folder). Parents come before their entries.
Tree = dict[str, tuple[int, bytes]]


def parts_of(rel: str) -> list[str]:
    return rel.split("/")


def parent_of(rel: str) -> str:
    return rel.rpartition("/")[0]


def sorted_tree(tree: Tree) -> Tree:
    return {rel: tree[rel] for rel in sorted(tree, key=parts_of)}


# The fake's stream: MAGIC, a JSON header line, a JSON line per record, a JSON end line with
# the number of records and the sha256 of everything before it. A record is {"path", "mode",
# "data"}: mode is st_mode with its type (null: the path is gone since the base), data the
# file's bytes or the link's target in hex.
_MAGIC = b"DOCKYARD-FAKE-VOLUME-STREAM 1\n"
_UUID = re.compile(r"[0-9a-f]{32}")
_HEX = re.compile(r"(?:[0-9a-f]{2})*")
_KINDS = (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK)


def _is_tag(tag: str) -> bool:
    try:
        check_tag(tag)
    except InvalidInput:
        return False
    return True


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise ValueError("a key appears twice")
    return fields


def _fields(line: bytes, keys: set[str], what: str) -> dict[str, object]:
    try:
        fields = json.loads(line, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        raise StreamError(f"the stream is corrupted ({what} is not readable JSON)") from None
    if not isinstance(fields, dict) or set(fields) != keys:
        raise StreamError(f"the stream is malformed ({what} should have {sorted(keys)})")
    return fields


def _text(value: object, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise StreamError(f"the stream is malformed ({what}: {value!r})")
    return value


@dataclass(frozen=True)
class _Record:
    path: str
    mode: int | None  # None: gone
    data: bytes

    @classmethod
    def parse(cls, line: bytes, number: int) -> _Record:
        what = f"record {number}"
        fields = _fields(line, {"path", "mode", "data"}, what)
        path, mode = fields["path"], fields["mode"]
        if not isinstance(path, str):
            raise StreamError(f"the stream is malformed ({what}: the path {path!r})")
        try:
            check_path(path)
        except ValueError as exc:
            raise StreamError(f"the stream is malformed ({what}: {exc})") from None
        data = bytes.fromhex(_text(fields["data"], _HEX, f"{what}'s data"))
        if not _fits(mode, data):
            raise StreamError(f"the stream is malformed ({what}: mode {mode!r} with that data)")
        assert mode is None or isinstance(mode, int)
        return cls(path, mode, data)

    def apply(self, tree: Tree) -> None:
        parent = parent_of(self.path)
        if parent and not stat.S_ISDIR(tree.get(parent, (0, b""))[0]):
            raise StreamError(f"the stream is malformed ({self.path!r} has no folder before it)")
        old = tree.get(self.path)
        if self.mode is None and old is None:
            raise StreamError(f"the stream is malformed ({self.path!r} is gone but never was)")
        folders = [stat.S_ISDIR(m) for m in (old[0] if old else 0, self.mode or 0)]
        if old is not None and not all(folders):  # replaced or gone, with what it held
            for rel in [r for r in tree if r == self.path or r.startswith(f"{self.path}/")]:
                del tree[rel]
        if self.mode is not None:
            mode = self.mode & ~0o222 if stat.S_ISREG(self.mode) else self.mode
            tree[self.path] = (mode, self.data)


def _fits(mode: object, data: bytes) -> bool:
    """Whether a record's mode is one the fake sends, with the data that kind carries."""
    if mode is None:  # gone
        return not data
    if type(mode) is not int or stat.S_IMODE(mode) > 0o777:
        return False
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFDIR:
        return not data
    if kind == stat.S_IFLNK:
        return bool(data) and b"\0" not in data
    return kind == stat.S_IFREG


@dataclass(frozen=True)
class FakeStream:
    snapshot: str
    base: str | None
    tag: str | None
    records: tuple[_Record, ...]

    @staticmethod
    def write(snap: Snapshot, tree: Tree, base: tuple[Snapshot, Tree] | None) -> bytes:
        old = base[1] if base is not None else {}
        gone = {r for r in old if r not in tree}
        lines = [
            json.dumps({"snapshot": snap.uuid, "tag": snap.tag, "base": base and base[0].uuid}),
            *(
                json.dumps({"path": rel, "mode": None, "data": ""})
                for rel in old
                if rel in gone and parent_of(rel) not in gone  # the topmost of what went
            ),
            *(
                json.dumps({"path": rel, "mode": mode, "data": data.hex()})
                for rel, (mode, data) in tree.items()
                if old.get(rel) != (mode, data)
            ),
        ]
        body = _MAGIC + "".join(f"{line}\n" for line in lines).encode()
        end = {"end": len(lines) - 1, "sha256": hashlib.sha256(body).hexdigest()}
        return body + json.dumps(end).encode() + b"\n"

    @classmethod
    def read(cls, data: bytes) -> FakeStream:
        if not data.startswith(_MAGIC):
            raise StreamError("this is not a fake volume stream")
        lines = data[len(_MAGIC) :].split(b"\n")
        if len(lines) < 3 or lines[-1] != b"":
            raise StreamError("the stream is truncated")
        *body, end_line, _ = lines
        end = _fields(end_line, {"end", "sha256"}, "the end")
        digest = hashlib.sha256(data[: len(data) - len(end_line) - 1]).hexdigest()
        if type(end["end"]) is not int or end != {"end": len(body) - 1, "sha256": digest}:
            raise StreamError("the stream is corrupted (its checksum does not match)")
        header = _fields(body[0], {"snapshot", "base", "tag"}, "the header")
        snapshot = _text(header["snapshot"], _UUID, "the snapshot")
        base = None if header["base"] is None else _text(header["base"], _UUID, "the base")
        tag = header["tag"]
        if tag is not None and not (isinstance(tag, str) and _is_tag(tag)):
            raise StreamError(f"the stream is malformed (the tag {tag!r})")
        assert tag is None or isinstance(tag, str)
        records = tuple(_Record.parse(line, n) for n, line in enumerate(body[1:], 1))
        return cls(snapshot, base, tag, records)

    def apply(self, base: Tree) -> Tree:
        tree = dict(base)
        for record in self.records:
            record.apply(tree)
        return sorted_tree(tree)


__all__ = ["FakeStream", "Tree", "parent_of", "parts_of", "sorted_tree"]
