"""Sample sheets: scatter over the rows of a CSV or TSV file with a header (nf-core's
convention).

``scatter: {sample: {sheet: samples.csv}}`` makes one instance per row. The column named
like the variable is the row's key (the instance is ``step[s1]``, and steps pair on it
as on any scatter value); every other column is a variable too, bound with its row
(``${fastq_1}``, ``${depth}``). A file ending in ``.tsv`` or ``.tab`` is split at tabs,
any other at commas (with CSV quoting). Every problem is reported as ``file:line``.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from dockyard.errors import short_repr
from dockyard.spec.reading import read_at_most

MAX_SHEET_BYTES = 64 * 1024**2
MAX_FIELD_BYTES = 4096
MAX_ROWS = 100_000  # as many instances as a step may have
MAX_COLUMNS = 256
MAX_CELLS = 2_000_000  # rows x columns: what a sheet may hold in memory (~200 MB)
MAX_PROBLEMS = 20  # reported per sheet; the rest are counted
TAB_SUFFIXES = (".tsv", ".tab")


@dataclass(frozen=True)
class Sheet:
    """A sheet's rows, by the key column's value (file order)."""

    key: str  # the column that is the scatter variable
    columns: tuple[str, ...]  # the other columns
    rows: dict[str, dict[str, str]]  # key value -> {column: value}
    lines: dict[str, int] = field(repr=False)  # key value -> its line in the file

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.rows)


class SheetProblems(Exception):
    """Why a sheet cannot be used: (line or None, message) for each problem found."""

    def __init__(self, problems: list[tuple[int | None, str]]):
        super().__init__(problems[0][1] if problems else "")
        self.problems = problems


def read_sheet(
    path: str, key: str, *, is_variable: Callable[[str], str | None] | None = None
) -> Sheet:
    """The sheet at ``path`` (already resolved inside the pipeline's folder), whose
    column ``key`` is the scatter variable; raise :class:`SheetProblems`.

    ``is_variable``: a callable that says why a column name cannot be a variable name
    (the pipeline file's own rule), or None when it can."""
    columns: tuple[str, ...] | None = None
    text = _read(path)
    delimiter = "\t" if path.lower().endswith(TAB_SUFFIXES) else ","
    first = text[: text.find("\n") if "\n" in text else len(text)]
    if first.count(delimiter) >= 4 * MAX_COLUMNS:  # (before a parser makes a list of them)
        raise SheetProblems([(1, f"expected at most {MAX_COLUMNS} columns")])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    problems: list[tuple[int | None, str]] = []
    try:
        header = next((row for row in reader if row), None)
        if header is None:
            raise SheetProblems([(None, "expected a header line naming the columns, found none")])
        header_line = reader.line_num
        if len(header) > MAX_COLUMNS:
            raise SheetProblems([(header_line, f"expected at most {MAX_COLUMNS} columns")])
        columns = _columns(header, header_line, key, is_variable, problems)
        most = MAX_ROWS if len(header) == 0 else min(MAX_ROWS, MAX_CELLS // len(header))
        rows: dict[str, dict[str, str]] = {}
        lines: dict[str, int] = {}
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            line = reader.line_num
            if len(problems) >= MAX_PROBLEMS:
                problems.append((None, "… and more problems; fix these first"))
                break
            if len(lines) == most:
                problems.append(
                    (
                        line,
                        f"expected at most {most} rows (instances of a step; at most "
                        f"{MAX_CELLS} fields in all)",
                    )
                )
                break
            if len(row) != len(header):
                problems.append(
                    (line, f"expected {len(header)} fields (as the header has), found {len(row)}")
                )
                continue
            values = dict(zip(header, row, strict=True))
            for name, value in values.items():
                problem = field_problem(value)
                if problem is not None:
                    problems.append((line, f"column {name!r}: {problem}"))
            if columns is None:
                continue
            found = values[key]
            if found in lines:
                problems.append(
                    (line, f"{key} {short_repr(found)} is already on line {lines[found]}")
                )
                continue
            lines[found] = line
            rows[found] = {c: values[c] for c in columns}
    except csv.Error as exc:
        problems.append((reader.line_num or None, f"not a well-formed sheet: {exc}"))
    if not problems and not rows:
        problems.append((None, "expected at least one row below the header, found none"))
    if problems:
        raise SheetProblems(problems)
    assert columns is not None
    return Sheet(key, columns, rows, lines)


def field_problem(value: str) -> str | None:
    """Why ``value`` (a field of a sheet, a parameter's text) cannot be pasted anywhere."""
    if not value.isprintable():
        return (
            f"expected printable text, found {short_repr(value)} (a control character "
            "would garble what terminals show)"
        )
    if len(value.encode()) > MAX_FIELD_BYTES:
        return f"expected at most {MAX_FIELD_BYTES} bytes, found {len(value.encode())}"
    return None


def _columns(
    header: list[str],
    line: int,
    key: str,
    is_variable: Callable[[str], str | None] | None,
    problems: list[tuple[int | None, str]],
) -> tuple[str, ...] | None:
    """The columns besides ``key``; None (with problems) when the header is not usable."""
    before = len(problems)
    seen: set[str] = set()
    for name in header:
        problem = is_variable(name) if is_variable is not None else None
        if problem is not None:
            problems.append((line, f"column {short_repr(name)}: {problem}"))
        elif name in seen:
            problems.append((line, f"column {name!r} appears twice in the header"))
        seen.add(name)
    if key not in header:
        shown = ", ".join(map(repr, header))
        problems.append(
            (
                line,
                f"expected a column named {key!r} (the scatter variable, whose values "
                f"name the instances); the header has {shown}",
            )
        )
    if len(problems) > before:
        return None
    return tuple(name for name in header if name != key)


def _read(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        reason = "no such file" if exc.errno == errno.ENOENT else exc.strerror
        raise SheetProblems([(None, f"cannot read the sheet: {reason}")]) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SheetProblems([(None, "expected a sheet (a regular file)")])
        data = read_at_most(fd, MAX_SHEET_BYTES + 1)
    except OSError as exc:
        raise SheetProblems([(None, f"cannot read the sheet: {exc.strerror}")]) from None
    finally:
        os.close(fd)
    if len(data) > MAX_SHEET_BYTES:
        raise SheetProblems([(None, f"expected a sheet of at most {MAX_SHEET_BYTES} bytes")])
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SheetProblems([(line, "expected UTF-8 text")]) from None
