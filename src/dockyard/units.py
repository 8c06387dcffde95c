"""Parsing of the human-friendly quantities in pipeline files: memory and durations.

Both are bounded: a pipeline file comes from anyone, and a number the engine or the
clock cannot hold (``99999999999h``, a 400-digit memory size) must be refused while
the file is read, not crash a run after its first container started.
"""

from __future__ import annotations

import re
from decimal import Decimal

from dockyard.errors import short_repr

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_SECONDS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
# Longer numbers than this are refused before any arithmetic (no 5,000-digit Decimals).
_MAX_DIGITS = 32

MAX_MEMORY = 1024**5  # 1 PiB: far beyond any host, far within the engine's int64
MIN_DURATION = 0.001  # the engine's healthcheck floor, and the unit's smallest step
MAX_DURATION = 30 * 24 * 3600.0  # 30 days: enough for any step, within every timer

MEMORY_HINT = "a memory size like 64m, 1g, 512MiB or a number of bytes"
DURATION_HINT = "a duration like 500ms, 30s, 10m or 2h"


def parse_memory(value: object) -> int:
    """Bytes from an int or a string with a k/m/g/t suffix (powers of 1024), at most 1 PiB."""
    size: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        match = _MEMORY.match(value)
        # "512B" and "512" mean bytes; "KiB"/"kb"/"k" all mean 1024; "512i" means nothing.
        if match and not (match.group(2) == "" and match.group(3).lower() == "i"):
            number, unit = match.group(1), match.group(2).lower()
            if len(number) > _MAX_DIGITS:
                size = MAX_MEMORY + 1
            else:
                size = int(Decimal(number) * 1024 ** _POWERS[unit])
    if size is None:
        raise ValueError(f"expected {MEMORY_HINT}, found {short_repr(value)}")
    if size <= 0:
        raise ValueError(f"expected a positive memory size, found {short_repr(value)}")
    if size > MAX_MEMORY:
        raise ValueError(
            f"expected a memory size of at most 1024t (1 PiB), found {short_repr(value)}"
        )
    return size


def parse_duration(value: object) -> float:
    """Seconds from a string such as ``500ms``, ``30s``, ``10m`` or ``2h`` (1ms to 30 days)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            number = match.group(1)
            if len(number) > _MAX_DIGITS:
                seconds = MAX_DURATION + 1
            else:
                seconds = float(Decimal(number) * _SECONDS[match.group(2)])
            if MIN_DURATION <= seconds <= MAX_DURATION:
                return seconds
            raise ValueError(
                f"expected a duration from 1ms to 30 days (720h), found {short_repr(value)}"
            )
    raise ValueError(f"expected {DURATION_HINT}, found {short_repr(value)}")


def format_memory(size: int) -> str:
    """Short and readable: exact when it is a whole unit (``64m``), else one decimal."""
    for suffix, power in (("t", 4), ("g", 3), ("m", 2), ("k", 1)):
        unit = 1024**power
        if size >= unit:
            if size % unit == 0:
                return f"{size // unit}{suffix}"
            return f"{size / unit:.1f}{suffix}"
    return str(size)


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
