"""Map a key path in the parsed YAML back to its line and column."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

Loc = Sequence[str | int]


class Locator:
    """Finds the 1-based (line, column) of a key path in a ruamel round-trip tree."""

    def __init__(self, root: Any):
        self.root = root

    def position(self, loc: Loc, *, key: bool = False) -> tuple[int | None, int | None]:
        """Where ``loc`` is written; with ``key`` the key's position rather than its value's.

        A path that does not exist (a missing key) resolves to its nearest ancestor.
        """
        node = self.root
        best: tuple[int, int] | None = _start(node)
        for depth, part in enumerate(loc):
            last = depth == len(loc) - 1
            if isinstance(node, CommentedMap) and part in node:
                line, col = node.lc.key(part) if (key and last) else node.lc.value(part)
                best = (line, col)
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                best = node.lc.item(part)
                node = node[part]
            else:
                break
            start = _start(node)
            if start is not None and not (key and last):
                best = start
        if best is None:
            return None, None
        return best[0] + 1, best[1] + 1

    def get(self, loc: Loc) -> Any:
        node = self.root
        for part in loc:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return None
        return node


def _start(node: Any) -> tuple[int, int] | None:
    lc = getattr(node, "lc", None)
    if lc is None or lc.line is None:
        return None
    return lc.line, lc.col


def dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
