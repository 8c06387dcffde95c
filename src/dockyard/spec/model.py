"""Typed models of the pipeline file (SPEC.md section 1).

Shorthand forms (``retries: 2``, ``image: busybox``, ``cache: /cache``) are
normalised by ``mode="before"`` validators so that every field has one shape
after loading and the rest of dockyard never sees the shorthand.

The models are strict: where the file says a bool or an int, ``'yes'``, ``1.0`` or
``true`` is refused rather than guessed at (a float may still be written as an int).
Every number the engine takes is bounded here by the engine's own limits, so that
``dockyard validate`` accepts nothing that ``dockyard run`` would then refuse.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    field_validator,
    model_validator,
)

from dockyard.errors import short_repr
from dockyard.names import NAME_RE, capability, env_name, reference_problem
from dockyard.spec.params import Param
from dockyard.units import format_memory, parse_duration, parse_memory

VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEB_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")  # Debian policy 5.6.1
DEB_SUITE_RE = re.compile(r"^[a-z][a-z0-9-]*$")
DEFAULT_CPUS = 1.0
DEFAULT_IMAGE = "busybox:1.36"
DEFAULT_MEMORY = 256 * 1024**2
# The engine refuses a memory limit below 6 MiB and a CPU quota below 1% of a CPU.
MIN_MEMORY = 6 * 1024**2
MIN_CPUS = 0.01
MAX_CPUS = 1024.0
# Processes and threads a container may have at once: far more than any tool needs
# (a JVM or a PostgreSQL has a few hundred), the same order as Podman's default (2048),
# and few enough that a fork bomb leaves most of a 32768-entry PID table to the host.
DEFAULT_PIDS = 2048
MIN_PIDS = 8  # init, a shell, a pipeline of tools
MAX_PIDS = 4_194_304  # the kernel's PID_MAX_LIMIT
MAX_ARGUMENT_BYTES = 128 * 1024 - 1  # the kernel's MAX_ARG_STRLEN, less the NUL


def _check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(
            f"expected a name of lower-case letters, digits, '-' and '_' starting with a "
            f"letter or digit, at most 63 characters; found {short_repr(value)}"
        )
    return value


def _check_var(value: str) -> str:
    if not VAR_RE.match(value):
        raise ValueError(
            f"expected a variable name like sample or read_group; found {short_repr(value)}"
        )
    return value


def _scalar_to_str(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        text = str(value)
        if "\0" in text:
            raise ValueError(f"expected text without NUL characters, found {short_repr(value)}")
        return text
    found = (
        "a list"
        if isinstance(value, list)
        else "a mapping"
        if isinstance(value, dict)
        else (short_repr(value))
    )
    raise ValueError(f"expected a string or number, found {found}")


def _argument(value: str) -> str:
    if "\0" in value:
        raise ValueError(f"expected a command without NUL characters, found {short_repr(value)}")
    if len(value.encode()) > MAX_ARGUMENT_BYTES:
        raise ValueError(
            f"expected a command argument of at most {MAX_ARGUMENT_BYTES} bytes (the kernel's "
            f"limit), found {len(value.encode())} bytes; put a long script in a file under "
            "inputs:"
        )
    return value


def _command(value: object) -> str | tuple[str, ...]:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("expected a non-empty command, found an empty string")
        return _argument(value)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(_argument(v) for v in value)
    raise ValueError(
        f"expected a command string (run through sh -c) or a non-empty list of strings "
        f"(exec form), found {short_repr(value)}"
    )


def _container_path(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(
            f"expected an absolute path inside the container, found {short_repr(value)}"
        )
    if not value.isprintable() or len(value.encode()) > 4096:
        raise ValueError(f"expected a path of printable characters, found {short_repr(value)}")
    parts = [p for p in value.split("/") if p not in ("", ".")]  # /./out is /out
    if ".." in parts:
        raise ValueError(f"expected a path without '..', found {short_repr(value)}")
    return "/" + "/".join(parts)


def _cpus(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        if MIN_CPUS <= number <= MAX_CPUS:  # (false for nan; inf is above)
            return number
    raise ValueError(
        f"expected a number of CPUs from {MIN_CPUS} to {MAX_CPUS:g}, found {short_repr(value)}"
    )


def _container_memory(value: object) -> int:
    size = parse_memory(value)
    if size < MIN_MEMORY:
        raise ValueError(
            f"expected at least {format_memory(MIN_MEMORY)} (the engine's smallest memory "
            f"limit), found {short_repr(value)}"
        )
    return size


def _version(value: object) -> int:
    if type(value) is not int or value != 1:  # not 1.0, not true
        raise ValueError(
            "expected version: 1 (the only version of the format so far), "
            f"found {short_repr(value)}"
        )
    return 1


def _reference(value: str) -> str:
    problem = reference_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _tag(value: str) -> str:
    problem = reference_problem(value, digest_allowed=False)
    if problem is not None:
        raise ValueError(problem)
    return value


def _pattern(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"expected {what}, found {short_repr(value)}")
        return value

    return AfterValidator(check)


Name = Annotated[str, AfterValidator(_check_name)]
DebPackage = Annotated[str, _pattern(DEB_PACKAGE_RE, "a Debian package name like samtools")]
DebSuite = Annotated[str, _pattern(DEB_SUITE_RE, "a Debian suite like bookworm")]
Var = Annotated[str, AfterValidator(_check_var)]
Memory = Annotated[int, PlainValidator(_container_memory)]
Cpus = Annotated[float, PlainValidator(_cpus)]
Duration = Annotated[float, PlainValidator(parse_duration)]
Command = Annotated[str | tuple[str, ...], PlainValidator(_command)]
EnvName = Annotated[str, PlainValidator(env_name)]
EnvValue = Annotated[str, PlainValidator(_scalar_to_str)]
Env = dict[EnvName, EnvValue]
ContainerPath = Annotated[str, PlainValidator(_container_path)]
Capability = Annotated[str, PlainValidator(capability)]
ImageRef = Annotated[str, AfterValidator(_reference)]
ImageTag = Annotated[str, AfterValidator(_tag)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Resources(_Model):
    cpus: Cpus = DEFAULT_CPUS
    memory: Memory = DEFAULT_MEMORY
    pids: int = Field(default=DEFAULT_PIDS, ge=MIN_PIDS, le=MAX_PIDS)


class Retries(_Model):
    max: int = Field(default=0, ge=0, le=100)
    memory_factor: float = Field(default=1.0, ge=1.0, le=64.0, allow_inf_nan=False)
    backoff: Duration = 0.0

    @model_validator(mode="before")
    @classmethod
    def _from_int(cls, data: Any) -> Any:
        if isinstance(data, int) and not isinstance(data, bool):
            return {"max": data}
        return data


class VolumeMount(_Model):
    path: ContainerPath
    readonly: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data


class ImageSpec(_Model):
    """Either an image reference (``busybox:1.36``) or ``{ref: NAME}`` of ``images:``."""

    name: ImageRef | None = None
    ref: Name | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, data: Any) -> Any:
        if isinstance(data, str):
            if not data.strip():
                raise ValueError("expected an image reference, found an empty string")
            return {"name": data}
        if isinstance(data, dict) and "name" in data:
            raise ValueError("expected an image reference string or {ref: NAME}")
        return data

    @model_validator(mode="after")
    def _one_of(self) -> ImageSpec:
        if self.ref is None and self.name is None:
            raise ValueError("expected an image reference string or {ref: NAME}")
        return self


class Glob(_Model):
    glob: str


class SheetSource(_Model):
    """The rows of a CSV or TSV file with a header (see :mod:`dockyard.spec.sheets`)."""

    sheet: str


def _scatter_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return "list[str]"
    if isinstance(value, dict):
        return "SheetSource" if "sheet" in value else "Glob"
    return None


# One form or the other, chosen by type, so that a wrong value gets one error, not two
# (the tags are the loader's names for the two types, which it leaves out of key paths).
ScatterValues = Annotated[
    Annotated[list[EnvValue], Tag("list[str]")]
    | Annotated[Glob, Tag("Glob")]
    | Annotated[SheetSource, Tag("SheetSource")],
    Discriminator(
        _scatter_kind,
        custom_error_type="scatter_values",
        custom_error_message="expected a list of values, {glob: PATTERN} or {sheet: FILE}",
    ),
]


class Healthcheck(_Model):
    command: Command
    interval: Duration = 1.0
    timeout: Duration = 5.0
    retries: int = Field(default=60, ge=1, le=10_000)


class DebianImage(_Model):
    """An image made offline from Debian packages: ``debootstrap --variant=minbase``."""

    include: list[DebPackage] = Field(min_length=1)
    suite: DebSuite | None = None  # default: this machine's Debian release


class ImageBuild(_Model):
    """How to make an image: a Dockerfile context (``build``) or Debian packages (``debian``)."""

    build: str | None = None
    debian: DebianImage | None = None
    tag: ImageTag | None = None

    @model_validator(mode="after")
    def _one_recipe(self) -> ImageBuild:
        if (self.build is None) == (self.debian is None):
            raise ValueError(
                "expected exactly one of build (a directory with a Dockerfile) or "
                "debian (packages to install)"
            )
        return self


class Volume(_Model):
    seed: str | None = None


class Service(_Model):
    image: ImageSpec
    command: Command | None = None
    env: Env = Field(default_factory=dict)
    volumes: dict[Name, VolumeMount] = Field(default_factory=dict)
    healthcheck: Healthcheck | None = None
    resources: Resources = Field(default_factory=Resources)
    keep: bool = False
    # Beyond the few every container gets (see dockyard.runtime.base.DEFAULT_CAPABILITIES).
    cap_add: list[Capability] = Field(default_factory=list)


class Defaults(_Model):
    """Values for every step that does not set its own (like Nextflow's ``process`` scope)."""

    image: ImageSpec | None = None
    env: Env = Field(default_factory=dict)
    resources: Resources | None = None
    retries: Retries | None = None
    timeout: Duration | None = None
    network: bool | None = None
    cap_add: list[Capability] | None = None


class Step(_Model):
    image: ImageSpec | None = None
    command: Command | None = None
    needs: list[Name] = Field(default_factory=list)
    scatter: dict[Var, ScatterValues] = Field(default_factory=dict)
    inputs: dict[Name, str] = Field(default_factory=dict)
    services: list[Name] = Field(default_factory=list)
    volumes: dict[Name, VolumeMount] = Field(default_factory=dict)
    env: Env = Field(default_factory=dict)
    resources: Resources | None = None
    retries: Retries | None = None
    timeout: Duration | None = None
    stdin: Name | None = None
    cache: bool | None = None
    # Off unless asked for, as in CWL (NetworkAccess): a step that needs no network gets
    # none, which also makes its container start faster. Steps with services are on the
    # run's network whatever this says.
    network: bool | None = None
    cap_add: list[Capability] | None = None

    @field_validator("scatter")
    @classmethod
    def _values_present(cls, value: dict[str, Any]) -> dict[str, Any]:
        for var, values in value.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"scatter variable {var!r} has no values")
        return value

    @property
    def upstream(self) -> list[str]:
        """``needs`` plus the ``stdin`` producer, without duplicates, in file order."""
        names = list(dict.fromkeys(self.needs))
        if self.stdin and self.stdin not in names:
            names.append(self.stdin)
        return names


class Pipeline(_Model):
    version: Annotated[int, PlainValidator(_version)]
    name: Name
    params: dict[Var, Param] = Field(default_factory=dict)
    defaults: Defaults = Field(default_factory=Defaults)
    images: dict[Name, ImageBuild] = Field(default_factory=dict)
    volumes: dict[Name, Volume] = Field(default_factory=dict)
    services: dict[Name, Service] = Field(default_factory=dict)
    steps: dict[Name, Step] = Field(min_length=1)

    def resolved_step(self, name: str) -> Step:
        """``steps[name]`` with ``defaults`` applied and every optional value filled in."""
        step = self.steps[name]
        defaults = self.defaults
        return step.model_copy(
            update={
                "image": step.image or defaults.image or ImageSpec.model_validate(DEFAULT_IMAGE),
                "env": {**defaults.env, **step.env},
                "resources": step.resources or defaults.resources or Resources(),
                "retries": step.retries or defaults.retries or Retries(),
                "timeout": step.timeout if step.timeout is not None else defaults.timeout,
                "network": step.network if step.network is not None else bool(defaults.network),
                "cap_add": step.cap_add if step.cap_add is not None else defaults.cap_add or [],
            }
        )
