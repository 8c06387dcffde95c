"""Where an agent keeps things on its node, as both sides name them.

Under the agent root (``DOCKYARD_AGENT_ROOT``, the same path on every node), each node has
a folder of its own named by its Swarm node id (nodes that share a disk, as the local test
cluster's do, stay apart):

    ROOT/NODE/outputs/DIGEST                        committed trees (outputs, inputs)
    ROOT/NODE/projects/PROJECT/work/RUN/NAME        an attempt's /out while it runs
    ROOT/NODE/projects/PROJECT/work/RUN/streams/..  a streamed chain's FIFOs

Every name that reaches a path comes through :func:`check_part` or :func:`check_digest`.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from dockyard.errors import AgentFailure

_PART = re.compile(r"[A-Za-z0-9_.-]{1,250}")  # (a file name has at most 255 bytes)
_DIGEST = re.compile(r"[0-9a-f]{64}")
DEFAULT_ROOT = "/var/lib/dockyard-agent"


class LayoutError(AgentFailure, ValueError):
    pass


def check_part(value: object, what: str) -> str:
    if not isinstance(value, str) or not _PART.fullmatch(value) or value in (".", ".."):
        raise LayoutError(f"{what}: not a valid name: {value!r}")
    return value


def check_digest(value: object) -> str:
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise LayoutError(f"not a digest: {value!r}")
    return value


def node_dir(root: str, node: str) -> PurePosixPath:
    return PurePosixPath(root) / check_part(node, "node")


def outputs_dir(root: str, node: str) -> PurePosixPath:
    return node_dir(root, node) / "outputs"


def object_dir(root: str, node: str, digest: str) -> PurePosixPath:
    return outputs_dir(root, node) / check_digest(digest)


def project_dir(root: str, node: str, project: str) -> PurePosixPath:
    return node_dir(root, node) / "projects" / check_part(project, "project")


def staging_dir(root: str, node: str, project: str, run: str, name: str) -> PurePosixPath:
    work = project_dir(root, node, project) / "work"
    return work / check_part(run, "run") / check_part(name, "staging folder")
