"""Embedded store codec: prefix ranges, cursors and value conversions, with hypothesis oracles."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idsvc.directory.base import MAX_PAGE
from idsvc.directory.sqlite import codec
from idsvc.errors import DirectoryError, InvalidInput
from idsvc.model import ALL_SERVICES, Service

KEYS = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


@given(prefix=KEYS, key=KEYS)
def test_prefix_range_is_exactly_startswith(prefix: str, key: str) -> None:
    low, high = codec.prefix_range(prefix)
    inside = low <= key and (high is None or key < high)
    assert inside == key.startswith(prefix)


@given(prefix=KEYS, keys=st.lists(KEYS, max_size=20, unique=True))
def test_prefix_range_agrees_with_sqlite_ordering(prefix: str, keys: list[str]) -> None:
    """SQLite's BINARY collation on UTF-8 orders like Python's code-point comparison."""
    low, high = codec.prefix_range(prefix)
    with sqlite3.connect(":memory:") as conn:
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
        conn.executemany("INSERT INTO t VALUES (?)", [(k,) for k in keys])
        if high is None:
            rows = conn.execute("SELECT k FROM t WHERE k >= ? ORDER BY k", [low])
        else:
            rows = conn.execute("SELECT k FROM t WHERE k >= ? AND k < ? ORDER BY k", [low, high])
        got = [row[0] for row in rows]
    conn.close()
    assert got == sorted(k for k in keys if k.startswith(prefix))


def test_prefix_range_edges() -> None:
    assert codec.prefix_range("") == ("", None)
    assert codec.prefix_range("a_") == ("a_", "a`")
    assert codec.prefix_range("\U0010ffff") == ("\U0010ffff", None)
    assert codec.prefix_range("a\U0010ffff") == ("a\U0010ffff", "b")
    with pytest.raises(InvalidInput):
        codec.prefix_range("x" * 255)
    with pytest.raises(InvalidInput):
        codec.prefix_range("a\x00")


@given(kind=st.sampled_from(["dom", "acc", "ali"]), key=KEYS)
def test_cursor_round_trip(kind: str, key: str) -> None:
    cursor = codec.encode_cursor(kind, key)
    assert cursor.isascii()
    assert codec.decode_cursor(kind, cursor) == key


@given(text=st.text(max_size=600))
def test_garbage_cursors_raise_invalid_input_only(text: str) -> None:
    try:
        key = codec.decode_cursor("acc", text)
    except InvalidInput:
        return
    assert codec.encode_cursor("acc", key) == text  # only real cursors decode


def test_cursor_of_other_kind_and_none() -> None:
    assert codec.decode_cursor("acc", None) is None
    with pytest.raises(InvalidInput):
        codec.decode_cursor("acc", codec.encode_cursor("dom", "x"))
    with pytest.raises(InvalidInput):
        codec.decode_cursor("acc", "")


@pytest.mark.parametrize("limit", [0, -1, True, 1.5, "10"])
def test_bad_limits(limit: object) -> None:
    with pytest.raises(InvalidInput):
        codec.page_limit(limit)  # type: ignore[arg-type]


def test_limits_are_capped() -> None:
    assert codec.page_limit(1) == 1
    assert codec.page_limit(MAX_PAGE) == MAX_PAGE
    assert codec.page_limit(10**9) == MAX_PAGE


@given(services=st.frozensets(st.sampled_from(list(Service))))
def test_services_round_trip(services: frozenset[Service]) -> None:
    text = codec.services_text(services)
    assert codec.services_of(text) == services
    assert text.split(",") == sorted(text.split(","))


def test_unknown_stored_service_is_a_directory_error() -> None:
    with pytest.raises(DirectoryError, match="unknown service"):
        codec.services_of("imap,gopher")
    assert codec.check_services(ALL_SERVICES) == ALL_SERVICES
    with pytest.raises(InvalidInput):
        codec.check_services(frozenset({"gopher"}))  # type: ignore[arg-type]


@given(
    st.datetimes(
        timezones=st.just(UTC), min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)
    )
)
def test_timestamps_round_trip_at_second_precision(moment: datetime) -> None:
    assert codec.moment(codec.seconds(moment)) == moment.replace(microsecond=0)


def test_timestamps_need_a_zone_and_come_back_as_utc() -> None:
    with pytest.raises(InvalidInput):
        codec.seconds(datetime(2024, 1, 1))  # naive on purpose
    paris = datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=1)))
    back = codec.moment(codec.seconds(paris))
    assert back == paris
    assert back.utcoffset() == timedelta(0)


def test_damaged_destinations_are_a_directory_error() -> None:
    for stored in ("not json", '{"a": 1}', "[1, 2]"):
        with pytest.raises(DirectoryError, match="damaged"):
            codec.destinations_of(stored)
    assert codec.destinations_of(codec.destinations_text(["b@x.example", "a@x.example"])) == (
        "a@x.example",
        "b@x.example",
    )
