"""Every error dockyard raises on purpose derives from :class:`DockyardError`.

The tree, and the exit status the CLI gives for each branch::

    DockyardError                      (1 unless a subclass says otherwise)
    ├── InvalidInput                   exit 2: nothing was started
    │   ├── SpecError                  the pipeline file is malformed (carries every problem)
    │   ├── PlanError                  the pipeline cannot be run as asked (e.g. a step never fits)
    │   ├── ImageError                 an image is missing or cannot be built
    │   ├── StateFolderError           .dockyard/ is not a writable folder (the user must fix it)
    │   └── UnknownReference           a RUN or STEP[KEY] named on the command line does not exist
    ├── EngineUnavailable              exit 3: the container engine cannot be reached
    ├── RuntimeFailure                 exit 1: the engine refused or failed an operation
    ├── StoreError                     exit 1: the state store is unusable (e.g. newer schema)
    ├── AgentFailure                   exit 1: between dockyard and a node agent, or in one
    │                                  (a refusal, a peer that did not answer, a stream or
    │                                  a signature that is not what it claims; the agent's
    │                                  own errors, in dockyard.agent, all derive from it)
    └── RunFailed                      exit 1: the pipeline ran and at least one instance failed

Errors carry structured fields (``pipeline``, ``step``) so that callers can act on
them without parsing messages; ``str(err)`` is a message a user can act on.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_INVALID = 2
EXIT_ENGINE = 3
SHOWN_ISSUES = 100  # problems listed in a SpecError's message (all are in .issues)


def short_repr(value: object, limit: int = 200) -> str:
    """``repr`` of a value found in the input, cut short: a 5,000-digit number or a
    megabyte of text is not worth echoing. ``repr`` also escapes control characters."""
    if isinstance(value, int) and abs(value).bit_length() > 14_000:  # repr refuses 4,300 digits
        return f"a number of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}… ({len(text)} characters)"


class DockyardError(Exception):
    exit_code = EXIT_RUN_FAILED

    def __init__(self, message: str, *, pipeline: str | None = None, step: str | None = None):
        super().__init__(message)
        self.message = message
        self.pipeline = pipeline
        self.step = step


class InvalidInput(DockyardError):
    exit_code = EXIT_INVALID


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a pipeline file, located as precisely as the YAML allows."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


class SpecError(InvalidInput):
    def __init__(self, issues: list[SpecIssue], *, what: str = "the pipeline file"):
        self.issues = sorted(issues, key=lambda i: (i.line or 0, i.column or 0, i.path))
        count = len(self.issues)
        head = f"{count} problem{'s' if count != 1 else ''} in {what}:"
        lines = [head, *(f"  {i}" for i in self.issues[:SHOWN_ISSUES])]
        if count > SHOWN_ISSUES:  # a file of 100,000 wrong values needs no 100,000 lines
            lines.append(f"  … and {count - SHOWN_ISSUES} more")
        super().__init__("\n".join(lines))


class PlanError(InvalidInput):
    pass


class ImageError(InvalidInput):
    pass


class StateFolderError(InvalidInput):
    pass


class UnknownReference(InvalidInput):
    pass


class EngineUnavailable(DockyardError):
    exit_code = EXIT_ENGINE


class RuntimeFailure(DockyardError):
    pass


class StoreError(DockyardError):
    pass


class AgentFailure(DockyardError):
    """A node agent refused, did not answer, or was sent what it must not take."""


class RunFailed(DockyardError):
    def __init__(self, run_id: str, failed: list[str], *, pipeline: str | None = None):
        self.run_id = run_id
        self.failed = failed
        shown = ", ".join(failed[:10]) + (" …" if len(failed) > 10 else "")
        super().__init__(
            f"run {run_id}: {len(failed)} instance(s) failed: {shown}; "
            f"see `dockyard status {run_id}` and `dockyard logs {run_id} STEP[KEY]`",
            pipeline=pipeline,
        )
