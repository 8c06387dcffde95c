"""Load a pipeline file into typed models, collecting every problem with its location."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from dockyard.collector import paused
from dockyard.errors import SpecError, SpecIssue, short_repr
from dockyard.spec import params as params_module
from dockyard.spec.checks import check_pipeline
from dockyard.spec.locate import Locator, dotted
from dockyard.spec.model import Pipeline, Var
from dockyard.spec.params import Param, ParamValue
from dockyard.spec.paths import STATE_DIR_NAME
from dockyard.spec.reading import load_yaml, read_pipeline_text
from dockyard.spec.sheets import Sheet

DEFAULT_FILE = "dockyard.yaml"


@dataclass(frozen=True)
class PipelineFile:
    """A validated pipeline together with where it came from."""

    path: Path
    pipeline: Pipeline
    # Each step's scatter values, globs expanded once, when the file was checked: a run
    # uses exactly the values that were checked, not what a glob finds a moment later.
    scatter: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    state: Path | None = None  # its state folder, where not the usual one beside the file
    # Each step's sample sheets (by scatter variable), read when the file was checked.
    sheets: Mapping[str, Mapping[str, Sheet]] = field(default_factory=dict)
    params: Mapping[str, ParamValue] = field(default_factory=dict)  # this run's values

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def state_dir(self) -> Path:
        return self.state if self.state is not None else self.root / STATE_DIR_NAME


def load_pipeline(
    path: str | Path,
    *,
    params: Sequence[str] = (),
    params_file: str | Path | None = None,
    checked: bool = True,
) -> PipelineFile:
    """Parse and check ``path``; raise :class:`SpecError` listing every problem found.

    ``params`` (``NAME=VALUE``, as ``--param`` gives them) and ``params_file`` set the
    file's parameters for this run (see :mod:`dockyard.spec.params`). Without
    ``checked``, only the file's own form is checked, not what a run would read (sheets,
    globs, inputs, the values pasted in): what the commands that show a past run need,
    whatever parameters that run had."""
    file = Path(path).absolute()
    shown = str(path)
    data = load_yaml(read_pipeline_text(file, shown), shown)

    if not isinstance(data, CommentedMap):
        found = "an empty file" if data is None else type(data).__name__
        raise SpecError(
            [
                SpecIssue(
                    shown, 1, 1, "", f"expected a mapping with version, name, steps; found {found}"
                )
            ]
        )

    locator = Locator(data)
    values, issues = _parameters(data, locator, shown, params, params_file)
    try:
        pipeline = Pipeline.model_validate(data)
    except ValidationError as exc:
        named = {issue.path for issue in issues}  # (a field naming an unknown parameter)
        other = [i for i in validation_issues(exc, locator, shown) if i.path not in named]
        raise SpecError(issues + other) from None
    if issues:
        raise SpecError(issues)
    if not checked:
        return PipelineFile(file, pipeline, params=values)

    with paused():  # (every value and path of a large scatter: see dockyard.collector)
        issues, scatter = check_pipeline(
            pipeline, file.parent, locator, shown, params_module.texts(values)
        )
    if issues:
        raise SpecError(issues)
    return PipelineFile(
        file,
        pipeline,
        {name: found.values for name, found in scatter.items()},
        sheets={name: found.sheets for name, found in scatter.items() if found.sheets},
        params=values,
    )


class _Declared(BaseModel):
    """The file's ``params:`` alone: their values are needed before the rest is checked."""

    model_config = ConfigDict(extra="ignore", strict=True)
    params: dict[Var, Param] = Field(default_factory=dict)


def _parameters(
    data: CommentedMap,
    locator: Locator,
    shown: str,
    settings: Sequence[str],
    params_file: str | Path | None,
) -> tuple[dict[str, ParamValue], list[SpecIssue]]:
    """This run's parameter values, given to the typed fields that name one whole; and
    the problems of those fields. Declarations that do not check leave every parameter
    unset (the full check reports them with the rest of the file)."""
    try:
        declared = _Declared.model_validate({"params": data.get("params") or {}}).params
    except ValidationError:
        return {}, []  # (the whole file's check fails on them, and says where)
    from_file: dict[str, object] = {}
    positions: dict[str, tuple[int | None, int | None]] = {}
    if params_file is not None:
        from_file, positions = params_module.read_params_file(Path(params_file))
    values = params_module.resolve(
        declared,
        from_file,
        settings,
        file_shown=str(params_file),
        position=positions,
    )
    issues = [
        SpecIssue(shown, *locator.position(loc), dotted(loc), message)
        for loc, message in params_module.substitute_typed(data, values)
    ]
    return values, issues


def validation_issues(exc: ValidationError, locator: Locator, shown: str) -> list[SpecIssue]:
    """Each problem pydantic found in a YAML document (a pipeline file, or a part of one
    such as an images file), located by line and column."""
    issues: list[SpecIssue] = []
    seen: set[tuple[Any, ...]] = set()
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        kind = err["type"]
        is_key = "[key]" in loc
        loc = _user_path([part for part in loc if part != "[key]"], locator)
        if kind == "extra_forbidden":
            key = loc[-1]
            message = f"unknown key {key!r}"
            hint = _did_you_mean(str(key), loc[:-1])
            if hint:
                message += f" (did you mean {hint!r}?)"
            line, col = locator.position(loc, key=True)
        elif kind == "missing":
            message = f"required key {loc[-1]!r} is missing"
            line, col = locator.position(loc[:-1])
        else:
            message = _describe(err)
            line, col = locator.position(loc, key=is_key)
        marker = (tuple(loc), kind if kind in ("extra_forbidden", "missing") else "value")
        if marker in seen:
            continue
        seen.add(marker)
        issues.append(SpecIssue(shown, line, col, dotted(loc), message))
    return issues


def _user_path(loc: list[Any], locator: Locator) -> list[Any]:
    """The path as the file has it: a union member adds its type's name to pydantic's path
    (``steps.a.scatter.x.Glob``), which means nothing to a user — unless the file itself has
    a key of that name there (``str:``)."""
    node: Any = locator.root
    path: list[Any] = []
    for part in loc:
        if (isinstance(node, CommentedMap) and part in node) or (
            isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node)
        ):
            node = node[part]
        elif _is_type_tag(part):
            continue
        else:
            node = None
        path.append(part)
    return path


def _is_type_tag(part: object) -> bool:
    return isinstance(part, str) and (
        part
        in {
            "list[str]",
            "Glob",
            "SheetSource",
            "str",
            "tuple[str, ...]",
            "function-plain[_scalar_to_str()]",
        }
        or part.startswith(("list[", "function-"))
    )


def _describe(err: Any) -> str:
    msg: str = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    found = err.get("input")
    msg = msg.replace("Input should be ", "expected ")
    for pydantic_says, we_say in _PLAIN_WORDS:
        msg = msg.replace(pydantic_says, we_say)
    msg = msg.replace(
        "Dictionary should have at least 1 item after validation, not 0",
        "expected at least one entry",
    )
    if isinstance(found, dict | list):
        found_text = "a mapping" if isinstance(found, dict) else "a list"
    else:
        found_text = short_repr(found)
    return f"{msg}; found {found_text}"


_PLAIN_WORDS = (
    ("a valid boolean", "true or false"),
    ("a valid integer", "a whole number"),
    ("a valid number", "a number"),
    ("a valid string", "text"),
    ("a valid list", "a list"),
    ("a valid dictionary or instance of", "a mapping of"),
    ("a valid dictionary", "a mapping"),
)


def _did_you_mean(key: str, parent_loc: list[Any]) -> str | None:
    model = _model_at(Pipeline, parent_loc)
    if model is None:
        return None
    choices = list(model.model_fields)
    matches = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


def _model_at(model: type[BaseModel], loc: list[Any]) -> type[BaseModel] | None:
    """The model class that describes the mapping at ``loc`` (for hints on unknown keys)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        elif typing.get_origin(current) is list:
            current = typing.get_args(current)[0]
        else:
            return None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [_unwrap(a) for a in typing.get_args(annotation) if a is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            annotation = models[0] if models else members[0]
        else:
            return annotation
