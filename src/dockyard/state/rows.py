"""The rows the state store reads back (:mod:`dockyard.state.store`): a run, an instance,
an attempt, a cache entry."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CacheEntry:
    output: str  # the committed output's digest
    volumes: dict[str, str]  # what the step left in each volume it writes


@dataclass(frozen=True)
class RunRow:
    id: str
    pipeline: str
    spec_sha256: str
    state: str
    started_at: float
    ended_at: float | None
    pool_cpus: float
    pool_memory: int
    message: str | None
    images: str | None = None  # JSON: image reference -> content digest
    image_packages: str | None = None  # JSON: image reference -> "package=version ..."
    params: str | None = None  # JSON: parameter name -> value


@dataclass(frozen=True)
class InstanceRow:
    instance: str
    step: str
    state: str
    attempts: int
    output: str | None
    cached: bool
    reason: str | None


@dataclass(frozen=True)
class AttemptRow:
    instance: str
    number: int
    container_id: str | None
    state: str
    exit_code: int | None
    reason: str | None
    detail: str | None
    cpus: float
    memory: int
    started_at: float
    ended_at: float | None
    log_path: str | None
    cpu_seconds: float | None = None
    peak_memory: int | None = None
    io_read: int | None = None
    io_write: int | None = None
    node: str | None = None
    reserved_cpus: float | None = None  # what it took from the pool (None: its cpus)


__all__ = ["AttemptRow", "CacheEntry", "InstanceRow", "RunRow"]
