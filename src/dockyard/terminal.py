"""Text bound for a terminal, made inert.

Names and messages dockyard prints come partly from elsewhere: instance names from
scatter values (file names), reasons from the engine, notes from apt. A control
character among them (ESC starts a terminal escape sequence that can recolour, move
the cursor, rewrite the title or the clipboard) or an invisible one (a bidi override)
must never reach the terminal as such. The pipeline file's checks refuse them where
they can; this is the last line of defence at every place that prints such text.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with each non-printable character written as its escape (``\\x1b``);
    newlines are kept, as the line breaks they are."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)
