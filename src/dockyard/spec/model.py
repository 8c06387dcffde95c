"""Typed models of the pipeline file (SPEC.md section 1).

Shorthand forms (``retries: 2``, ``image: busybox``, ``cache: /cache``) are
normalised by ``mode="before"`` validators so that every field has one shape
after loading and the rest of dockyard never sees the shorthand.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    field_validator,
    model_validator,
)

from dockyard.units import parse_duration, parse_memory

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEB_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")  # Debian policy 5.6.1
DEB_SUITE_RE = re.compile(r"^[a-z][a-z0-9-]*$")
DEFAULT_CPUS = 1.0
DEFAULT_IMAGE = "busybox:1.36"
DEFAULT_MEMORY = 256 * 1024**2


def _check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(
            f"expected a name of lower-case letters, digits, '-' and '_' starting with a "
            f"letter or digit, at most 63 characters; found {value!r}"
        )
    return value


def _check_var(value: str) -> str:
    if not VAR_RE.match(value):
        raise ValueError(f"expected a variable name like sample or read_group; found {value!r}")
    return value


def _scalar_to_str(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError(f"expected a string or number, found {type(value).__name__}")


def _command(value: object) -> str | tuple[str, ...]:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("expected a non-empty command, found an empty string")
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(
        f"expected a command string (run through sh -c) or a non-empty list of strings "
        f"(exec form), found {value!r}"
    )


def _container_path(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected an absolute path inside the container, found {value!r}")
    parts = [p for p in value.split("/") if p]
    if ".." in parts:
        raise ValueError(f"expected a path without '..', found {value!r}")
    return "/" + "/".join(parts)


def _pattern(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"expected {what}, found {value!r}")
        return value

    return AfterValidator(check)


Name = Annotated[str, AfterValidator(_check_name)]
DebPackage = Annotated[str, _pattern(DEB_PACKAGE_RE, "a Debian package name like samtools")]
DebSuite = Annotated[str, _pattern(DEB_SUITE_RE, "a Debian suite like bookworm")]
Var = Annotated[str, AfterValidator(_check_var)]
Memory = Annotated[int, PlainValidator(parse_memory)]
Duration = Annotated[float, PlainValidator(parse_duration)]
Command = Annotated[str | tuple[str, ...], PlainValidator(_command)]
EnvValue = Annotated[str, PlainValidator(_scalar_to_str)]
ContainerPath = Annotated[str, PlainValidator(_container_path)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Model):
    cpus: float = Field(default=DEFAULT_CPUS, gt=0)
    memory: Memory = DEFAULT_MEMORY


class Retries(_Model):
    max: int = Field(default=0, ge=0, le=100)
    memory_factor: float = Field(default=1.0, ge=1.0)
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

    name: str | None = None
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


ScatterValues = Annotated[list[EnvValue] | Glob, Field(union_mode="left_to_right")]


class Healthcheck(_Model):
    command: Command
    interval: Duration = 1.0
    timeout: Duration = 5.0
    retries: int = Field(default=60, ge=1)


class DebianImage(_Model):
    """An image made offline from Debian packages: ``debootstrap --variant=minbase``."""

    include: list[DebPackage] = Field(min_length=1)
    suite: DebSuite | None = None  # default: this machine's Debian release


class ImageBuild(_Model):
    """How to make an image: a Dockerfile context (``build``) or Debian packages (``debian``)."""

    build: str | None = None
    debian: DebianImage | None = None
    tag: str | None = None

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
    env: dict[str, EnvValue] = Field(default_factory=dict)
    volumes: dict[Name, VolumeMount] = Field(default_factory=dict)
    healthcheck: Healthcheck | None = None
    resources: Resources = Field(default_factory=Resources)
    keep: bool = False


class Defaults(_Model):
    """Values for every step that does not set its own (like Nextflow's ``process`` scope)."""

    image: ImageSpec | None = None
    env: dict[str, EnvValue] = Field(default_factory=dict)
    resources: Resources | None = None
    retries: Retries | None = None
    timeout: Duration | None = None
    network: bool | None = None


class Step(_Model):
    image: ImageSpec | None = None
    command: Command | None = None
    needs: list[Name] = Field(default_factory=list)
    scatter: dict[Var, ScatterValues] = Field(default_factory=dict)
    inputs: dict[Name, str] = Field(default_factory=dict)
    services: list[Name] = Field(default_factory=list)
    volumes: dict[Name, VolumeMount] = Field(default_factory=dict)
    env: dict[str, EnvValue] = Field(default_factory=dict)
    resources: Resources | None = None
    retries: Retries | None = None
    timeout: Duration | None = None
    stdin: Name | None = None
    cache: bool | None = None
    # Off unless asked for, as in CWL (NetworkAccess): a step that needs no network gets
    # none, which also makes its container start faster. Steps with services are on the
    # run's network whatever this says.
    network: bool | None = None

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
    version: Literal[1]
    name: Name
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
            }
        )
