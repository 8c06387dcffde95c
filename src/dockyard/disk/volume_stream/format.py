"""The volume stream's format (version 1), and the checks every input must pass::

    DOCKYARD-VOLUME-STREAM 1\\n
    {"snapshot": UUID, "base": UUID or null, "volume": NAME, "tag": ...}\\n
    then records, each a type byte, a JSON line and (files only) raw data:
      D {"path", "mode", "mtime_ns"}                       a directory
      F {"path", "mode", "mtime_ns", "size", "extents"}    a file: the data of each
        [offset, length] extent follows; the gaps are holes, so sparse files stay sparse;
        then the sha256 of the data sent as a hex line (the extents' bytes in order:
        holes are neither read, sent nor hashed, on either side)
      L {"path", "target"}                                 a symbolic link
      X {"path"}                                           gone since the base (increments)
      E {"records", "bytes", "digest"}                     the end: counts, and the sha256
                                                           of everything before it

A path is relative, '/'-separated and normalised (no '', '.' or '..' component). A record's
folder comes before it (a D record, or the base). Files are independent records, so a
future resumable transfer can skip those already received with a matching digest.

A stream is input from another machine: its header and records are validated against
strict models (pydantic) before anything acts on them, so a malformed one is a
:class:`StreamError` that names the problem, never a crash.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Annotated, BinaryIO, ClassVar, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from dockyard.disk.volumes import TAG_RE
from dockyard.errors import InvalidInput
from dockyard.names import NAME_RE

MAGIC = b"DOCKYARD-VOLUME-STREAM 1\n"
CHUNK = 1 << 20
MAX_LINE = 1 << 20  # a record's JSON line; paths and link targets are far shorter
MAX_FILE_SIZE = 1 << 44  # 16 TiB, ext4's limit
MAX_PATH = 4095  # bytes, as PATH_MAX less the NUL
MAX_NAME = 255  # bytes of one path component
INT64 = 2**63
_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
M = TypeVar("M", bound=BaseModel)


class StreamError(InvalidInput):
    """A stream that is not valid: nothing was applied."""

    def __init__(self, message: str):
        super().__init__(f"{message}; nothing was applied")


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")  # names that are not UTF-8 stay bytes


def check_path(path: str) -> str:
    """A path inside the volume: relative, normalised, every name a real one."""
    parts = path.split("/")
    if (
        not path
        or "\0" in path
        or len(_encoded(path)) > MAX_PATH
        or any(part in ("", ".", "..") or len(_encoded(part)) > MAX_NAME for part in parts)
    ):
        raise ValueError(
            f"expected a relative, normalised path (no '', '.' or '..' part, no NUL), "
            f"found {path!r}, which could lead outside the volume"
        )
    return path


def _check_target(target: str) -> str:
    if not target or "\0" in target or len(_encoded(target)) > MAX_PATH:
        raise ValueError(f"expected a link target without NUL, found {target!r}")
    return target


def _check_id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise ValueError(f"expected a snapshot uuid, found {value!r}")
    return value


def _check_digest(value: str) -> str:
    if not _DIGEST.fullmatch(value):
        raise ValueError(f"expected a sha256 as 64 hex digits, found {value!r}")
    return value


def _check_tag(value: str) -> str:
    if not TAG_RE.fullmatch(value) or value.isdigit():
        raise ValueError(f"expected a snapshot tag, found {value!r}")
    return value


def _check_volume(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise ValueError(f"expected a volume name, found {value!r}")
    return value


Path_ = Annotated[str, AfterValidator(check_path)]
Mode = Annotated[int, Field(ge=0, le=0o7777)]
Nanoseconds = Annotated[int, Field(ge=-INT64, lt=INT64)]
Count = Annotated[int, Field(ge=0, lt=INT64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Header(_Strict):
    snapshot: Annotated[str, AfterValidator(_check_id)]
    base: Annotated[str, AfterValidator(_check_id)] | None = None
    volume: Annotated[str, AfterValidator(_check_volume)] | None = None
    tag: Annotated[str, AfterValidator(_check_tag)] | None = None


class DirRecord(_Strict):
    kind: ClassVar[str] = "D"
    path: Path_
    mode: Mode
    mtime_ns: Nanoseconds


class FileRecord(_Strict):
    kind: ClassVar[str] = "F"
    path: Path_
    mode: Mode
    mtime_ns: Nanoseconds
    size: Annotated[int, Field(ge=0, le=MAX_FILE_SIZE)]
    extents: list[Annotated[list[Count], Field(min_length=2, max_length=2)]]

    @model_validator(mode="after")
    def _extents_in_order(self) -> FileRecord:
        end = 0
        for start, length in self.extents:
            if length == 0 or start < end or start + length > self.size:
                raise ValueError(
                    f"extent [{start}, {length}] is empty, overlaps the one before it or "
                    f"ends past the file's size ({self.size})"
                )
            end = start + length
        return self


class LinkRecord(_Strict):
    kind: ClassVar[str] = "L"
    path: Path_
    target: Annotated[str, AfterValidator(_check_target)]


class GoneRecord(_Strict):
    kind: ClassVar[str] = "X"
    path: Path_


class EndRecord(_Strict):
    records: Count
    bytes: Count
    digest: Annotated[str, AfterValidator(_check_digest)]


Record = DirRecord | FileRecord | LinkRecord | GoneRecord
_KINDS: dict[bytes, type[DirRecord] | type[FileRecord] | type[LinkRecord] | type[GoneRecord]] = {
    b"D": DirRecord,
    b"F": FileRecord,
    b"L": LinkRecord,
    b"X": GoneRecord,
}


def _problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"{where + ': ' if where else ''}{message}"


class Writer:
    """Writes a stream, keeping the counts and the digest its end record carries."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.records = 0

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.digest.update(data)
        self.bytes += len(data)

    def header(self, header: Header) -> None:
        self.write(MAGIC + _json(header.model_dump()) + b"\n")

    def record(self, record: Record) -> None:
        fields = record.model_dump()
        self.write(record.kind.encode() + _json(fields) + b"\n")
        self.records += 1

    def end(self) -> None:
        end = {"records": self.records, "bytes": self.bytes, "digest": self.digest.hexdigest()}
        self.out.write(b"E" + _json(end) + b"\n")


def _json(fields: dict[str, object]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


class Reader:
    """Reads and checks a stream: its header, then its records one by one, each validated,
    and its end against the digest of everything before it."""

    def __init__(self, inp: BinaryIO):
        self.inp = inp
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.count = 0  # records read

    def header(self) -> Header:
        magic = self.inp.read(len(MAGIC))
        if magic != MAGIC:
            raise StreamError(
                "this is not a dockyard volume stream (or one of a newer version)"
                + (" (the input is empty)" if not magic else "")
            )
        self._count(magic)
        return self._parse(self._line("the header"), Header, "the header")

    def records(self) -> Iterator[Record]:
        """Each record in turn; the caller reads a file record's data before the next.
        Ends after the end record checked out and nothing follows it."""
        while True:
            kind = self.inp.read(1)
            if not kind:
                raise StreamError("the stream is truncated (it has no end record)")
            what = f"record {self.count + 1}"
            if kind == b"E":
                end = self._parse(self._line(what, counted=False), EndRecord, what)
                if (end.digest, end.records, end.bytes) != (
                    self.digest.hexdigest(),
                    self.count,
                    self.bytes,
                ):
                    raise StreamError("the stream is corrupted (its checksum does not match)")
                if self.inp.read(1):
                    raise StreamError("the stream has data after its end record")
                return
            model = _KINDS.get(kind)
            if model is None:
                raise StreamError(f"the stream is corrupted (unknown record type {kind!r})")
            self._count(kind)
            self.count += 1
            yield self._parse(self._line(what), model, f"{what} ({kind.decode()})")

    def data(self, size: int) -> Iterator[bytes]:
        """The next ``size`` bytes of file data, in chunks."""
        while size:
            chunk = self.inp.read(min(CHUNK, size))
            if not chunk:
                raise StreamError("the stream is truncated (a file's data is cut short)")
            self._count(chunk)
            size -= len(chunk)
            yield chunk

    def checksum(self, what: str) -> str:
        return self._line(what).strip().decode("ascii", "replace")

    def _line(self, what: str, *, counted: bool = True) -> bytes:
        line = self.inp.readline(MAX_LINE)
        if not line.endswith(b"\n"):
            if len(line) >= MAX_LINE:
                raise StreamError(f"the stream is corrupted ({what} is too long)")
            raise StreamError(f"the stream is truncated (it ends in the middle of {what})")
        if counted:
            self._count(line)
        return line

    def _count(self, data: bytes) -> None:
        self.digest.update(data)
        self.bytes += len(data)

    def _parse(self, line: bytes, model: type[M], what: str) -> M:
        try:
            fields = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):
            raise StreamError(f"the stream is corrupted ({what} is not readable JSON)") from None
        try:
            return model.model_validate(fields)
        except ValidationError as exc:
            raise StreamError(f"the stream is malformed ({what}: {_problem(exc)})") from None


__all__ = [
    "MAGIC",
    "DirRecord",
    "EndRecord",
    "FileRecord",
    "GoneRecord",
    "Header",
    "LinkRecord",
    "Reader",
    "Record",
    "StreamError",
    "Writer",
    "check_path",
]
