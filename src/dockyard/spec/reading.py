"""Read a pipeline file safely: bounded, located, checked before any YAML object is built.

A pipeline file comes from anyone. Whatever it holds must end as a located problem
(exit 2), never as an internal error, a hang or a huge allocation: so the file must be
a regular file of bounded size (not a FIFO that blocks, not ``/dev/zero``), and each
YAML parser event is checked as the composer takes it (the parser keeps its own
stack, so thousands of nested brackets cost no Python recursion), refusing what the
format has no use for before the composer, the constructor and pydantic, which do
recurse, go deeper: deep nesting, alias bombs and cycles, tags (``!!python/...``),
numbers too long to mean anything. The file is parsed once.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    Event,
    ScalarEvent,
)
from ruamel.yaml.parser import RoundTripParser

from dockyard.errors import SpecError, SpecIssue, short_repr

MAX_FILE_BYTES = 1024**2  # a long pipeline is tens of kilobytes; YAML parses at ~250 kB/s
MAX_DEPTH = 64  # a pipeline needs about 7 levels
# Values in the document, aliases expanded: a 100,000-value scatter list fits. ruamel
# parses some 25,000 values a second, so this also bounds the time a file can take.
MAX_NODES = 150_000
MAX_NUMBER_CHARS = 40  # an int64 has 19 digits
# YAML 1.2's printable set (5.1); ruamel refuses the rest with an unlocated error.
_NOT_YAML = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NUMBER = re.compile(
    r"[-+]?(?:0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+"
    r"|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?)"
)
_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


class _Constructor(RoundTripConstructor):
    """Round-trip construction, except that dates stay text.

    YAML reads ``2024-01-01`` as a date, which no field of the format wants (an env value
    or a scatter value is text), and ``2024-02-30`` as a ValueError with no location.
    """

    def construct_yaml_timestamp(self, node: Any, values: Any = None) -> Any:
        return str(node.value)


_Constructor.add_constructor("tag:yaml.org,2002:timestamp", _Constructor.construct_yaml_timestamp)


def yaml_error(exc: YAMLError, shown: str, what: str = "pipeline file") -> SpecError:
    """A located issue for a YAML syntax error (where the parser knows the place)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark else None
    col = mark.column + 1 if mark else None
    if isinstance(exc, MarkedYAMLError):
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
    else:
        problem = str(exc)
    return SpecError(
        [SpecIssue(shown, line, col, "", f"invalid YAML: {problem}")], what=f"the {what}"
    )


def read_pipeline_text(file: Path, shown: str, what: str = "pipeline file") -> str:
    """The file's text: a regular file of at most MAX_FILE_BYTES, in UTF-8 (``what``: what
    messages call it)."""

    def refuse(message: str, line: int | None = None, col: int | None = None) -> SpecError:
        return SpecError([SpecIssue(shown, line, col, "", message)], what=f"the {what}")

    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise refuse(f"no such {what}") from None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            raise refuse(f"no such {what} (a part of its path is not a folder)") from None
        raise refuse(f"cannot read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "something else")
            raise refuse(f"expected a {what} (a regular file), found {kind}")
        if info.st_size > MAX_FILE_BYTES:
            raise refuse(
                f"expected a {what} of at most {MAX_FILE_BYTES // 1024**2} MiB, "
                f"found {info.st_size} bytes"
            )
        data = read_at_most(fd, MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise refuse(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:  # it grew while we read it
        raise refuse(f"expected a {what} of at most {MAX_FILE_BYTES // 1024**2} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _position(data[: exc.start].decode("utf-8", "replace"))
        raise refuse(
            f"expected UTF-8 text, found the byte {data[exc.start : exc.start + 1]!r}", line, col
        ) from None
    bad = _NOT_YAML.search(text)
    if bad is not None:
        line, col = _position(text[: bad.start()])
        raise refuse(
            f"control character {bad.group()!r} (U+{ord(bad.group()):04X}) is not allowed in "
            f"a {what}; remove it (in a double-quoted string, \\t and \\n write a tab "
            "and a newline)",
            line,
            col,
        )
    return text.removeprefix("\ufeff")


def read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _position(before: str) -> tuple[int, int]:
    """1-based line and column of the character that follows ``before``."""
    line = before.count("\n") + 1
    return line, len(before) - (before.rfind("\n") + 1) + 1


@dataclass
class _Open:
    """A collection whose end the walk has not reached yet."""

    anchor: str | None
    nodes: int = 1  # itself and everything in it so far, aliases expanded


class _Refused(Exception):
    def __init__(self, event: Event, message: str):
        super().__init__(message)
        self.mark = event.start_mark
        self.message = message


@dataclass
class _Walk:
    """The checks on the stream of events; see the module docstring."""

    sizes: dict[str, int] = field(default_factory=dict)  # anchor -> nodes, aliases expanded
    open: list[_Open] = field(default_factory=list)
    count: int = 0

    def see(self, event: Event) -> None:
        tag = getattr(event, "tag", None)
        tag = getattr(tag, "value", tag)
        if tag and not isinstance(event, AliasEvent):
            raise _Refused(
                event,
                f"YAML tags are not part of the pipeline format, found {short_repr(str(tag))}; "
                "quote the value if it is text",
            )
        if isinstance(event, CollectionStartEvent):
            if len(self.open) >= MAX_DEPTH:
                raise _Refused(event, f"expected at most {MAX_DEPTH} levels of nesting")
            self.open.append(_Open(event.anchor))
            self._add(event, 1, counted=False)
        elif isinstance(event, CollectionEndEvent):
            done = self.open.pop()
            if done.anchor:
                self.sizes[done.anchor] = done.nodes
            if self.open:
                self.open[-1].nodes += done.nodes
        elif isinstance(event, AliasEvent):
            if any(frame.anchor == event.anchor for frame in self.open):
                raise _Refused(event, f"alias *{event.anchor} refers to a node that contains it")
            self._add(event, self.sizes.get(str(event.anchor), 1))
        elif isinstance(event, ScalarEvent):
            # Only a plain scalar is a number; Python refuses to parse ints of 4,300 digits.
            value = event.value
            if event.style is None and len(value) > MAX_NUMBER_CHARS and _NUMBER.fullmatch(value):
                raise _Refused(
                    event,
                    f"a number of {len(value)} characters cannot be meant; quote it if it is text",
                )
            if event.anchor:
                self.sizes[event.anchor] = 1
            self._add(event, 1)

    def _add(self, event: Event, nodes: int, *, counted: bool = True) -> None:
        self.count += nodes
        if counted and self.open:
            self.open[-1].nodes += nodes
        if self.count > MAX_NODES:
            raise _Refused(
                event,
                f"expected at most {MAX_NODES} values (aliases count each time they are used)",
            )


class _CheckedParser(RoundTripParser):
    """ruamel's round-trip parser, with each event checked as the composer takes it."""

    def __init__(self, loader: Any) -> None:
        super().__init__(loader)
        self.walk = _Walk()

    def get_event(self) -> Any:
        event = super().get_event()
        self.walk.see(event)
        return event


def load_yaml(text: str, shown: str, what: str = "pipeline file") -> Any:
    """The YAML document in ``text`` as ruamel's round-trip tree (positions kept)."""
    yaml = YAML(typ="rt")
    yaml.Parser = _CheckedParser
    yaml.Constructor = _Constructor
    try:
        with warnings.catch_warnings():
            # ruamel warns about YAML 1.1 floats on stderr; the value is what matters here
            warnings.simplefilter("ignore")
            return yaml.load(text)
    except _Refused as exc:
        line, col = exc.mark.line + 1, exc.mark.column + 1
        raise SpecError(
            [SpecIssue(shown, line, col, "", exc.message)], what=f"the {what}"
        ) from None
    except YAMLError as exc:
        raise yaml_error(exc, shown, what) from None
