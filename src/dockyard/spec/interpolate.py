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


def unclosed(text: str) -> bool:
    """Whether ``text`` has a ``${`` without its ``}`` (a literal one is written ``$${``)."""
    end = 0
    for match in _TOKEN.finditer(text):
        if "${" in text[end : match.start()]:
            return True
        end = match.end()
    return "${" in text[end:]


def uses(text: str) -> dict[str, int]:
    """How many times ``text`` refers to each variable."""
    counts: dict[str, int] = {}
    for match in _TOKEN.finditer(text):
        if match.group(1) is not None:
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


class Template:
    """A text with ``${name}`` parts, split once, so that rendering it for each of many
    instances is a join rather than a regular-expression pass."""

    def __init__(self, text: str):
        literals, names, end = [], [], 0
        literal = ""
        for match in _TOKEN.finditer(text):
            literal += text[end : match.start()]
            end = match.end()
            if match.group(1) is None:
                literal += "$"  # $$
            else:
                literals.append(literal)
                names.append(match.group(1))
                literal = ""
        literals.append(literal + text[end:])
        self.literals = tuple(literals)
        self.names = tuple(names)

    def render(self, values: Mapping[str, str]) -> str:
        """Raise ``KeyError`` for an unknown name, as :func:`interpolate` does."""
        if not self.names:
            return self.literals[0]
        parts = [self.literals[0]]
        for name, literal in zip(self.names, self.literals[1:], strict=True):
            parts.append(values[name])
            parts.append(literal)
        return "".join(parts)
