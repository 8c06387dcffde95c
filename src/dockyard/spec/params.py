"""Pipeline parameters: ``params:`` with typed defaults, set for one run by ``--param
NAME=VALUE`` and ``--params FILE.yaml`` (Nextflow's ``params``, Snakemake's ``config``).

A parameter is data, as a scatter value is: ``${params.NAME}`` is pasted where a scatter
variable may be (command, env, inputs, a glob or a sample sheet's path), under the same
rules (in a shell script only shell-inert text), and so it is part of the cache key of
exactly the instances that use it. A typed field (``resources``, ``timeout``,
``retries``) may be one ``${params.NAME}`` as its whole value: it takes the parameter's
typed value before the file is checked, so ``cpus: ${params.threads}`` is a number.

Later sources win: the file's defaults, then the params file, then each ``--param``.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator
from ruamel.yaml.comments import CommentedMap

from dockyard.errors import SpecError, SpecIssue, short_repr
from dockyard.spec.reading import load_yaml, read_pipeline_text
from dockyard.spec.sheets import field_problem

ParamValue = str | int | float | bool
ParamType = Literal["text", "int", "float", "bool"]
PREFIX = "params."
_WHOLE = re.compile(r"\$\{params\.([A-Za-z_][A-Za-z0-9_]*)\}")
_TYPE_OF: dict[type, ParamType] = {str: "text", int: "int", float: "float", bool: "bool"}
_SHOWN = {"text": "text", "int": "a whole number", "float": "a number", "bool": "true or false"}
# Fields whose whole value may be one ${params.NAME}: typed, and never interpolated.
TYPED_FIELDS = ("resources", "timeout", "retries")
MAX_ISSUES = 20  # problems reported in a params file; the rest are counted


class Param(BaseModel):
    """One parameter: ``NAME: DEFAULT`` or ``NAME: {default:, type:, help:}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    default: ParamValue
    type: ParamType
    help: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            data = {"default": data}
        if "default" not in data:
            return data
        data = {**data, "default": plain(data["default"])}
        if "type" not in data:
            kind = _TYPE_OF.get(type(data["default"]))
            if kind is None:
                raise ValueError(
                    "expected a default of text, a number or true/false, found "
                    + _kind_of(data["default"])
                )
            data["type"] = kind
        return data

    @model_validator(mode="after")
    def _default_fits(self) -> Param:
        problem = value_problem(self.type, self.default)
        if problem is not None:
            raise ValueError(f"default: {problem}")
        if self.type == "float" and not isinstance(self.default, float):
            object.__setattr__(self, "default", float(self.default))
        return self


def plain(value: object) -> object:
    """``value`` as a plain ``bool``, ``int``, ``float`` or ``str``: YAML's loader gives
    its own subclasses (a float that remembers how it was written, an int from ``0x10``)."""
    if isinstance(value, bool) or value is None:
        return value
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def _kind_of(value: object) -> str:
    if value is None:
        return "null (no value)"
    if isinstance(value, list):
        return "a list"
    return "a mapping" if isinstance(value, dict) else short_repr(value)


def value_problem(kind: ParamType, value: object) -> str | None:
    """Why ``value`` (as YAML typed it) cannot be a parameter of type ``kind``."""
    fits = {
        "text": isinstance(value, str),
        "int": type(value) is int,
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
    }[kind]
    if not fits:
        return f"expected {_SHOWN[kind]}, found {_kind_of(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"expected a finite number, found {short_repr(value)}"
    return field_problem(value) if isinstance(value, str) else None


def parse(kind: ParamType, text: str) -> ParamValue:
    """A ``--param`` value (text on a command line) as a value of type ``kind``."""
    value: ParamValue
    if kind == "int":
        if not re.fullmatch(r"[-+]?[0-9]{1,19}", text.strip()):
            raise ValueError(f"expected a whole number, found {short_repr(text)}")
        value = int(text)
    elif kind == "float":
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected a number, found {short_repr(text)}") from None
    elif kind == "bool":
        if text.lower() not in ("true", "false"):
            raise ValueError(f"expected true or false, found {short_repr(text)}")
        value = text.lower() == "true"
    else:
        value = text
    problem = value_problem(kind, value)
    if problem is not None:
        raise ValueError(problem)
    return value


def as_text(value: ParamValue) -> str:
    """How a value is written where it is pasted (``true``, ``30``, ``0.001``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def texts(values: Mapping[str, ParamValue]) -> dict[str, str]:
    """``{"params.NAME": text}``: what ``${params.NAME}`` renders as."""
    return {PREFIX + name: as_text(value) for name, value in values.items()}


def unknown(name: str, declared: Collection[str]) -> str:
    message = f"unknown parameter {name!r}"
    hint = difflib.get_close_matches(name, list(declared), n=1, cutoff=0.6)
    if hint:
        return message + f" (did you mean {hint[0]!r}?)"
    known = ", ".join(sorted(declared))
    return message + (f" (params: declares {known})" if known else " (the file has no params:)")


def resolve(
    declared: Mapping[str, Param],
    from_file: Mapping[str, object],
    settings: Sequence[str],
    *,
    file_shown: str = "--params",
    position: Mapping[str, tuple[int | None, int | None]] | None = None,
) -> dict[str, ParamValue]:
    """Each parameter's value for a run: its default, the params file's, each ``--param``.

    Raise :class:`SpecError` naming every problem: an unknown name, a value of the wrong
    type, a ``--param`` without ``=``."""
    values: dict[str, ParamValue] = {name: p.default for name, p in declared.items()}
    issues: list[SpecIssue] = []
    for name, found in from_file.items():
        if len(issues) == MAX_ISSUES:
            issues.append(SpecIssue(file_shown, None, None, "", "… and more problems like these"))
            break
        value = plain(found)
        line, col = (position or {}).get(name, (None, None))
        if name not in declared:
            issues.append(SpecIssue(file_shown, line, col, str(name), unknown(name, declared)))
            continue
        problem = value_problem(declared[name].type, value)
        if problem is not None:
            issues.append(SpecIssue(file_shown, line, col, name, problem))
            continue
        assert isinstance(value, str | int | float)
        values[name] = float(value) if declared[name].type == "float" else value
    for setting in settings:
        name, sep, text = setting.partition("=")
        shown = f"--param {short_repr(setting)}"
        if not sep or not name:
            issues.append(SpecIssue(shown, None, None, "", "expected NAME=VALUE"))
        elif name not in declared:
            issues.append(SpecIssue(shown, None, None, "", unknown(name, declared)))
        else:
            try:
                values[name] = parse(declared[name].type, text)
            except ValueError as exc:
                issues.append(SpecIssue(shown, None, None, "", str(exc)))
    if issues:
        raise SpecError(issues, what="the parameters")
    return values


def read_params_file(
    path: Path,
) -> tuple[dict[str, object], dict[str, tuple[int | None, int | None]]]:
    """A params file's values and where each is written: a YAML (or JSON) mapping."""
    shown = str(path)
    data = load_yaml(read_pipeline_text(path, shown, "params file"), shown, "params file")
    if data is None:
        return {}, {}
    if not isinstance(data, CommentedMap):
        raise SpecError(
            [SpecIssue(shown, 1, 1, "", "expected a mapping of parameter names to values")],
            what="the params file",
        )
    positions: dict[str, tuple[int | None, int | None]] = {}
    for key in data:
        try:
            line, col = data.lc.value(key)
        except KeyError:  # (a key that a merge (<<) brought in has no place of its own)
            continue
        positions[str(key)] = (line + 1, col + 1)
    return {str(k): v for k, v in data.items()}, positions


def substitute_typed(
    data: Any, values: Mapping[str, ParamValue]
) -> Iterator[tuple[list[str | int], str]]:
    """Give each typed field written as one ``${params.NAME}`` the parameter's value, in
    the parsed file (before it is checked); yield (where, problem) for unknown names."""
    if not isinstance(data, dict):
        return
    owners: list[tuple[list[str | int], Any]] = [(["defaults"], data.get("defaults"))]
    for section in ("steps", "services"):
        group = data.get(section)
        if isinstance(group, dict):
            owners.extend(([section, name], body) for name, body in group.items())
    for loc, body in owners:
        if not isinstance(body, dict):
            continue
        for field in TYPED_FIELDS:
            value = body.get(field)
            if isinstance(value, dict):
                for key in list(value):
                    yield from _substitute(value, key, [*loc, field, key], values)
            else:
                yield from _substitute(body, field, [*loc, field], values)


def _substitute(
    holder: dict[Any, Any], key: Any, loc: list[str | int], values: Mapping[str, ParamValue]
) -> Iterator[tuple[list[str | int], str]]:
    value = holder.get(key)
    if not isinstance(value, str):
        return
    match = _WHOLE.fullmatch(value.strip())
    if match is None:
        return
    name = match.group(1)
    if name in values:
        holder[key] = values[name]
    else:
        yield loc, unknown(name, values)
