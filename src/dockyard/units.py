"""Parsing of the human-friendly quantities in pipeline files: memory and durations."""

from __future__ import annotations

import re

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

MEMORY_HINT = "a memory size like 64m, 1g, 512MiB or a number of bytes"
DURATION_HINT = "a duration like 500ms, 30s, 10m or 2h"


def parse_memory(value: object) -> int:
    """Bytes from an int or a string with a k/m/g/t suffix (powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"expected {MEMORY_HINT}, found {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"expected a positive memory size, found {value}")
        return value
    if isinstance(value, str):
        match = _MEMORY.match(value)
        if match:
            number, unit, tail = match.groups()
            # "512B" and "512" mean bytes; "KiB"/"kb"/"k" all mean 1024.
            if not (unit == "" and tail.lower() == "i"):
                size = int(float(number) * 1024 ** _POWERS[unit.lower()])
                if size > 0:
                    return size
    raise ValueError(f"expected {MEMORY_HINT}, found {value!r}")


def parse_duration(value: object) -> float:
    """Seconds from a string such as ``500ms``, ``30s``, ``10m`` or ``2h``."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            seconds = float(match.group(1)) * _SECONDS[match.group(2)]
            if seconds > 0:
                return seconds
    raise ValueError(f"expected {DURATION_HINT}, found {value!r}")


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
