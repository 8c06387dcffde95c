from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.units import format_memory, parse_duration, parse_memory


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (1024, 1024),
        ("512", 512),
        ("64k", 64 * 1024),
        ("64m", 64 * 1024**2),
        ("1g", 1024**3),
        ("2t", 2 * 1024**4),
        ("256MiB", 256 * 1024**2),
        ("16MiB", 16 * 1024**2),
        ("1.5g", int(1.5 * 1024**3)),
        ("2GB", 2 * 1024**3),
    ],
)
def test_memory_accepts_bytes_and_binary_suffixes(text: object, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["lots", "", "-1m", "1x", "0", 0, True, None])
def test_memory_rejects_anything_else_with_a_hint(text: object) -> None:
    with pytest.raises(ValueError, match="memory"):
        parse_memory(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("10m", 600), ("2h", 7200), ("1.5s", 1.5)],
)
def test_duration_accepts_ms_s_m_h(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "10", "10 minutes", "0s", 5, "-1s", "1d"])
def test_duration_rejects_anything_else_with_a_hint(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=2**50))
def test_exact_memory_formats_round_trip(size: int) -> None:
    text = format_memory(size)
    if "." not in text:
        assert parse_memory(text) == size


@pytest.mark.parametrize(
    "text",
    [2**50 + 1, "1025t", "9" * 400, "9" * 400 + "m", "1" + "0" * 40 + "g"],
    ids=["int", "1025t", "400-digits", "400-digits-m", "41-digits-g"],
)
def test_memory_is_bounded_so_that_no_number_overflows(text: object) -> None:
    with pytest.raises(ValueError, match="at most 1024t"):
        parse_memory(text)


def test_a_memory_too_long_to_print_is_refused_all_the_same() -> None:
    with pytest.raises(ValueError, match="a number of about 5000 digits"):
        parse_memory(10**5000)


@pytest.mark.parametrize(
    "text",
    ["99999999999h", "721h", "0.5ms", "0.0001s", "9" * 400 + "s", "1" + "0" * 400 + "ms"],
    ids=["overflow", "721h", "0.5ms", "0.0001s", "400-digits", "401-digits-ms"],
)
def test_durations_are_bounded_from_a_millisecond_to_thirty_days(text: str) -> None:
    with pytest.raises(ValueError, match="from 1ms to 30 days"):
        parse_duration(text)


def test_the_bounds_themselves_are_accepted() -> None:
    assert parse_memory("1024t") == 2**50
    assert parse_duration("1ms") == 0.001
    assert parse_duration("720h") == 30 * 24 * 3600
