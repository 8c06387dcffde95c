"""Cache keys of step instances (pure).

A key covers what can change a step's result: the image's content digest, the command,
the env, the content of its inputs and of the committed outputs it reads (given here as
digests), and, for a streamed consumer, its producer's key. Never resources: more memory
does not change a result.
"""

from __future__ import annotations

import hashlib
import json

from dockyard.planning.graph import Instance

KEY_FORMAT = 2  # 2: file digests by chunks (disk.content_digest): old entries miss
_ENCODE = json.JSONEncoder(sort_keys=True).encode  # (json.dumps would make one per call)


def cache_key(
    instance: Instance,
    image_id: str,
    inputs: list[tuple[str, str]],
    upstream: list[tuple[str, str]],
) -> str:
    """The key of one instance: inputs are (name, digest) (a bound file's name is its path
    inside, a file copied into ``/out`` is ``seed:`` and its path there), upstream are
    (mount point, digest)."""
    material: dict[str, object] = {
        "format": KEY_FORMAT,
        "image": image_id,
        "command": list(instance.command) if instance.command is not None else None,
        "env": sorted(instance.env),
        "inputs": sorted(inputs),
        "upstream": sorted(upstream),
    }
    # What only work handed over while a run goes on has (a CWL tool's): left out where it
    # is the default, so that the keys of pipeline steps stay as they were.
    if instance.out != "/out":
        material["out"] = instance.out
    if instance.workdir is not None:
        material["workdir"] = instance.workdir
    if any(path is not None for path in instance.stdio):
        material["stdio"] = list(instance.stdio)
    if instance.success_codes != (0,):
        material["success"] = list(instance.success_codes)
    return hashlib.sha256(_ENCODE(material).encode()).hexdigest()
