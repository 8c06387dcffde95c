"""How much of a tree dockyard keeps as an output, or takes from another node.

A step can nest folders or make entries at no cost to itself, and every one costs each
later walk, digest and transfer of its output; these bound that. Outputs past them are
refused at commit (the attempt fails saying why), streams past them on receipt.

- Depth 1,000: far beyond real trees, and what recursive readers of the output take
  (Python's default recursion limit is 1,000; ``shutil.rmtree`` and many scripts recurse).
- Paths of 4,095 bytes (PATH_MAX less its NUL, as the volume stream): no program can open
  a longer one by its name, and a tree digest's line carries the whole path, so this keeps
  an entry's cost bounded.
- 1,000,000 entries (files, folders, links): the listings held while walking stay in
  memory, and a million is minutes of metadata work, where an archive would be one file.
"""

from __future__ import annotations

from dataclasses import dataclass

from dockyard.errors import DockyardError

MAX_DEPTH = 1_000
MAX_PATH = 4_095
MAX_ENTRIES = 1_000_000


OUTPUT = "its output"  # (what the messages call the tree, unless told otherwise)


class OutputRefused(DockyardError):
    """A tree that dockyard does not keep (too deep, too many entries, a path too long):
    a step's output, or an input that a node would refuse."""


@dataclass(frozen=True)
class Limits:
    depth: int = MAX_DEPTH
    entries: int = MAX_ENTRIES
    path: int = MAX_PATH

    def check_depth(self, rel: tuple[str, ...], what: str = OUTPUT) -> None:
        """Refuse a folder at ``rel`` deeper than allowed (``what``: the tree, in words)."""
        if len(rel) > self.depth:
            raise OutputRefused(
                f"{what} nests folders more than {self.depth:,} deep "
                f"({_short('/'.join(rel))}): dockyard keeps trees up to {self.depth:,} levels"
            )

    def check_path(self, rel: str, what: str = OUTPUT) -> None:
        """Refuse the path ``rel`` if it is longer than allowed."""
        if len(rel) * 4 <= self.path:  # (cheap: no name is more than 4 bytes a character)
            return
        length = len(rel.encode("utf-8", "surrogateescape"))
        if length > self.path:
            raise OutputRefused(
                f"{what} has a path of {length:,} bytes ({_short(rel)}), longer than the "
                f"{self.path:,} by which a program can open a file"
            )

    def too_many(self, what: str = OUTPUT) -> OutputRefused:
        return OutputRefused(
            f"{what} has more than {self.entries:,} files, folders and links, more "
            "than dockyard keeps (an archive of them would be one file)"
        )


def _short(rel: str) -> str:
    return repr(rel if len(rel) <= 60 else f"{rel[:28]}…{rel[-28:]}")


LIMITS = Limits()

__all__ = ["LIMITS", "MAX_DEPTH", "MAX_ENTRIES", "MAX_PATH", "Limits", "OutputRefused"]
