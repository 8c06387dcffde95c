"""Where a step's scatter values come from: a list in the file, a glob over file names,
or the rows of a sample sheet (:mod:`dockyard.spec.sheets`); each checked with the rules
of :mod:`dockyard.spec.values`, problems reported where they are written."""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from dockyard.errors import short_repr
from dockyard.spec.interpolate import Template, variables
from dockyard.spec.model import VAR_RE, Glob, SheetSource, Step
from dockyard.spec.params import PREFIX
from dockyard.spec.paths import BadPath, Resolver, glob_values
from dockyard.spec.sheets import Sheet, SheetProblems, read_sheet
from dockyard.spec.values import (
    MAX_COMBINATIONS,
    MAX_REPORTED,
    SHELL_INERT_SHOWN,
    Add,
    ambiguity_problem,
    check_name_length,
    check_step_values,
    not_shell_inert,
    shell_problem,
    shell_scripts,
    value_problem,
)

# (the sheet as the file names it, its line or None, the problem)
SheetIssue = Callable[[str, int | None, str], None]


@dataclass(frozen=True)
class StepValues:
    """A step's scatter values (globs expanded, sheets read) and its sheets' rows."""

    values: dict[str, tuple[str, ...]]
    sheets: dict[str, Sheet] = field(default_factory=dict)

    @cached_property
    def columns(self) -> dict[str, tuple[str, ...]]:
        """Each sheet column's values (keys aside), as a variable's are."""
        found: dict[str, tuple[str, ...]] = {}
        for sheet in self.sheets.values():
            for column in sheet.columns:
                found[column] = tuple(row[column] for row in sheet.rows.values())
        return found


def check_scatter(
    add: Add,
    sheet_issue: SheetIssue,
    resolver: Resolver,
    loc: Sequence[str | int],
    step: Step,
    params: Mapping[str, str],
) -> StepValues | None:
    """The step's scatter values, with every problem reported; None when a variable has no
    usable values or there are too many instances."""
    values: dict[str, tuple[str, ...]] = {}
    sheets: dict[str, Sheet] = {}
    sheet_paths: dict[str, str] = {}  # each sheet's path as the file names it, params filled in
    for var, spec in step.scatter.items():
        where = [*loc, "scatter", var]
        if isinstance(spec, Glob):
            pattern = _with_params(add, [*where, "glob"], spec.glob, params)
            found = None if pattern is None else glob_values(resolver.root, pattern)
            if isinstance(found, str):
                add([*where, "glob"], found)
            elif found == ():
                add(
                    [*where, "glob"],
                    f"glob {short_repr(pattern)} matches no file under {str(resolver.root)!r}",
                )
            elif found is not None:
                values[var] = found
        elif isinstance(spec, SheetSource):
            read = _sheet(add, sheet_issue, resolver, [*where, "sheet"], spec.sheet, var, params)
            if read is not None:
                sheets[var], sheet_paths[var] = read
                values[var] = sheets[var].keys
        else:
            values[var] = tuple(spec)
            repeated = [value for value, n in Counter(spec).items() if n > 1]
            if repeated:
                shown = ", ".join(map(repr, repeated[:MAX_REPORTED]))
                add(where, f"scatter values must be unique; repeated: {shown}")
    total = math.prod(len(v) for v in values.values())
    if total > MAX_COMBINATIONS:
        add([*loc, "scatter"], f"expected at most {MAX_COMBINATIONS} instances, found {total}")
        return None
    _check_columns(add, loc, step, sheets)
    listed = {var for var, spec in step.scatter.items() if isinstance(spec, list)}
    plain = {var: found for var, found in values.items() if var not in sheets}
    check_step_values(add, loc, step.command, plain, listed)
    for var, sheet in sheets.items():
        _check_sheet_values(
            functools.partial(sheet_issue, sheet_paths[var]),
            step.command,
            sheet,
            var,
            len(values) > 1,
        )
    check_name_length(add, loc, values)
    return StepValues(values, sheets) if len(values) == len(step.scatter) else None


def _with_params(
    add: Add, where: list[str | int], text: str, params: Mapping[str, str]
) -> str | None:
    """``text`` with its ``${params.NAME}`` filled in; None (reported) for any other
    variable, which a path that says where values come from cannot know yet."""
    others = [name for name in variables(text) if not name.startswith(PREFIX)]
    missing = [name for name in variables(text) if name.startswith(PREFIX) and name not in params]
    if others:
        add(where, f"only ${{params.NAME}} can be used here, found ${{{others[0]}}}")
    if missing:
        add(where, f"unknown parameter {missing[0][len(PREFIX) :]!r}")
    return None if others or missing else Template(text).render(params)


def _sheet(
    add: Add,
    sheet_issue: SheetIssue,
    resolver: Resolver,
    where: list[str | int],
    raw: str,
    var: str,
    params: Mapping[str, str],
) -> tuple[Sheet, str] | None:
    """The sheet and its path (``raw`` with its parameters), or None (reported)."""
    path = _with_params(add, where, raw, params)
    if path is None:
        return None
    try:
        real = resolver.real(path, shown=raw)
    except BadPath as exc:
        add(where, str(exc))
        return None
    try:
        return read_sheet(real, var, is_variable=_variable_problem), path
    except SheetProblems as exc:
        for line, message in exc.problems[: MAX_REPORTED * 4]:
            sheet_issue(path, line, message)
        if len(exc.problems) > MAX_REPORTED * 4:
            sheet_issue(path, None, f"… and {len(exc.problems) - MAX_REPORTED * 4} more problems")
        return None


def _variable_problem(name: str) -> str | None:
    if VAR_RE.match(name):
        return None
    return f"expected a column name usable as a variable (like fastq_1), found {short_repr(name)}"


def _check_columns(
    add: Add, loc: Sequence[str | int], step: Step, sheets: Mapping[str, Sheet]
) -> None:
    """A column of a sheet is a variable of the step: it names no other one."""
    owner: dict[str, str] = {var: var for var in step.scatter}
    for var, sheet in sheets.items():
        for column in sheet.columns:
            if column in owner:
                add(
                    [*loc, "scatter", var, "sheet"],
                    f"the sheet's column {column!r} is also "
                    + (
                        f"the scatter variable {column!r}"
                        if owner[column] == column
                        else f"a column of the sheet of {owner[column]!r}"
                    )
                    + " of this step; rename one of them",
                )
            owner.setdefault(column, var)


def _check_sheet_values(
    issue: Callable[[int | None, str], None],
    command: str | Sequence[str] | None,
    sheet: Sheet,
    var: str,
    several: bool,
) -> None:
    """Each row's values, located by line: the key names files and instances; a value a
    shell reads is shell-inert (a column may hold a path)."""
    in_shell = {name for _, text in shell_scripts(command) for name in variables(text)}
    problems: dict[str, int] = {}

    def report(kind: str, line: int, message: str) -> None:
        problems[kind] = problems.get(kind, 0) + 1
        if problems[kind] <= MAX_REPORTED:
            issue(line, message)

    for key, row in sheet.rows.items():
        line = sheet.lines[key]
        problem = value_problem(key) or (ambiguity_problem(key) if several else None)
        if problem is None and var in in_shell:
            problem = shell_problem(key, var, "a shell script of this step")
        if problem is not None:
            report(var, line, f"{var}: {problem}")
        for column in sheet.columns:
            if column not in in_shell:
                continue
            char = not_shell_inert(row[column], paths=True)
            if char is not None:
                report(
                    column,
                    line,
                    f"{column}: value {short_repr(row[column])} would be pasted into a shell "
                    f"script of this step, where {char!r} is shell syntax, not data; use "
                    f"{SHELL_INERT_SHOWN} and / only, or the exec form",
                )
    for kind, count in problems.items():
        if count > MAX_REPORTED:
            issue(None, f"… and {count - MAX_REPORTED} more values of {kind!r} like these")


def combinations(
    found: StepValues, params: Mapping[str, str], used: Sequence[str]
) -> Iterator[dict[str, str]]:
    """Each distinct assignment of the ``used`` variables that some instance has: a
    sheet's columns go with their row, so only pairs that a row holds come out."""
    axes: list[list[dict[str, str]]] = []
    wanted = set(used)
    for var, keys in found.values.items():
        sheet = found.sheets.get(var)
        names = [var, *(sheet.columns if sheet else ())]
        touched = [name for name in names if name in wanted]
        if not touched:
            continue
        if sheet is None:
            axes.append([{var: key} for key in keys])
            continue
        seen: dict[tuple[str, ...], dict[str, str]] = {}
        for key, row in sheet.rows.items():
            full = {var: key, **row}
            picked = {name: full[name] for name in touched}
            seen.setdefault(tuple(picked.values()), picked)
        axes.append(list(seen.values()))
    fixed = {name: params[name] for name in used if name in params}
    for parts in itertools.product(*axes):
        combo = dict(fixed)
        for part in parts:
            combo.update(part)
        yield combo
