"""Read a pipeline file safely: bounded, located, and before any YAML object is built.

A pipeline file comes from anyone. Whatever it holds must end as a located problem
(exit 2), never as an internal error, a hang or a huge allocation: so the file must be
a regular file of bounded size (not a FIFO that blocks, not ``/dev/zero``), and its
YAML is first walked as a flat stream of parser events (the parser keeps its own
stack, so thousands of nested brackets cost no Python recursion) to refuse what the
format has no use for before the composer, the constructor and pydantic, which do
recurse, ever see it: deep nesting, alias bombs and cycles, tags (``!!python/...``),
numbers too long to mean anything.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
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

from dockyard.errors import SpecError, SpecIssue, short_repr

MAX_FILE_BYTES = 2 * 1024**2  # a long pipeline is tens of kilobytes
MAX_DEPTH = 64  # a pipeline needs about 7 levels
MAX_NODES = 500_000  # with aliases expanded: a 100,000-value scatter list fits easily
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


def pipeline_yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    return yaml


def yaml_error(exc: YAMLError, shown: str) -> SpecError:
    """A located issue for a YAML syntax error (where the parser knows the place)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark else None
    col = mark.column + 1 if mark else None
    if isinstance(exc, MarkedYAMLError):
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
    else:
        problem = str(exc)
    return SpecError([SpecIssue(shown, line, col, "", f"invalid YAML: {problem}")])


def read_pipeline_text(file: Path, shown: str) -> str:
    """The file's text: a regular file of at most MAX_FILE_BYTES, in UTF-8."""

    def refuse(message: str, line: int | None = None, col: int | None = None) -> SpecError:
        return SpecError([SpecIssue(shown, line, col, "", message)])

    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise refuse("no such pipeline file") from None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            raise refuse("no such pipeline file (a part of its path is not a folder)") from None
        raise refuse(f"cannot read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise refuse(f"expected a pipeline file (a regular file), found {kind}")
        if info.st_size > MAX_FILE_BYTES:
            raise refuse(
                f"expected a pipeline file of at most {MAX_FILE_BYTES // 1024**2} MiB, "
                f"found {info.st_size} bytes"
            )
        data = _read_at_most(fd, MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise refuse(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:  # it grew while we read it
        raise refuse(f"expected a pipeline file of at most {MAX_FILE_BYTES // 1024**2} MiB")
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
            "a pipeline file; in a double-quoted string write an escape such as \\t",
            line,
            col,
        )
    return text.removeprefix("\ufeff")


def _read_at_most(fd: int, limit: int) -> bytes:
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


def check_events(yaml: YAML, text: str, shown: str) -> None:
    """Refuse, with its line, what the format has no use for; see the module docstring."""
    sizes: dict[str, int] = {}  # anchor -> nodes in its subtree (aliases expanded)
    stack: list[_Open] = []
    count = 0

    def refuse(event: Event, message: str) -> SpecError:
        mark = event.start_mark
        return SpecError([SpecIssue(shown, mark.line + 1, mark.column + 1, "", message)])

    try:
        for event in yaml.parse(text):
            tag = getattr(event, "tag", None)
            tag = getattr(tag, "value", tag)
            if tag and not isinstance(event, AliasEvent):
                raise refuse(
                    event,
                    f"YAML tags are not part of the pipeline format, found {short_repr(str(tag))}; "
                    "quote the value if it is text",
                )
            if isinstance(event, CollectionStartEvent):
                if len(stack) >= MAX_DEPTH:
                    raise refuse(event, f"expected at most {MAX_DEPTH} levels of nesting")
                stack.append(_Open(event.anchor))
                count += 1
            elif isinstance(event, CollectionEndEvent):
                done = stack.pop()
                if done.anchor:
                    sizes[done.anchor] = done.nodes
                if stack:
                    stack[-1].nodes += done.nodes
            elif isinstance(event, ScalarEvent | AliasEvent):
                nodes = 1
                if isinstance(event, AliasEvent):
                    if any(frame.anchor == event.anchor for frame in stack):
                        raise refuse(
                            event, f"alias *{event.anchor} refers to a node that contains it"
                        )
                    nodes = sizes.get(str(event.anchor), 1)
                else:
                    _check_scalar(event, refuse)
                    if event.anchor:
                        sizes[event.anchor] = 1
                count += nodes
                if stack:
                    stack[-1].nodes += nodes
            if count > MAX_NODES:
                raise refuse(
                    event,
                    f"expected at most {MAX_NODES} values (aliases count each time they are used)",
                )
    except YAMLError as exc:
        raise yaml_error(exc, shown) from None


def _check_scalar(event: ScalarEvent, refuse: Callable[[Event, str], SpecError]) -> None:
    # Only a plain scalar can be a number; Python refuses to parse ints of 4,300 digits.
    plain = event.style is None
    if plain and len(event.value) > MAX_NUMBER_CHARS and _NUMBER.fullmatch(event.value):
        raise refuse(
            event,
            f"a number of {len(event.value)} characters cannot be meant; quote it if it is text",
        )
