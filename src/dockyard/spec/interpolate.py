"""``${name}`` interpolation of scatter variables (``$$`` writes a literal ``$``)."""

from __future__ import annotations

import re
from collections.abc import Mapping

_TOKEN = re.compile(r"\$\$|\$\{([^}]*)\}")


def variables(text: str) -> list[str]:
    """The variable names ``text`` refers to, in order of first use."""
    names = [m.group(1) for m in _TOKEN.finditer(text) if m.group(1) is not None]
    return list(dict.fromkeys(names))


def interpolate(text: str, values: Mapping[str, str]) -> str:
    """Replace ``${name}`` with ``values[name]``; raise ``KeyError`` for unknown names."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return "$" if name is None else values[name]

    return _TOKEN.sub(replace, text)
