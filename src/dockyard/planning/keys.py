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
    """The key of one instance: inputs are (name, digest), upstream are (mount point, digest)."""
    material = {
        "format": KEY_FORMAT,
        "image": image_id,
        "command": list(instance.command) if instance.command is not None else None,
        "env": sorted(instance.env),
        "inputs": sorted(inputs),
        "upstream": sorted(upstream),
    }
    return hashlib.sha256(_ENCODE(material).encode()).hexdigest()
