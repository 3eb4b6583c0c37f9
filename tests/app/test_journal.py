"""The click journal: framing, sealing, crash replay and the flusher's idempotence."""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path

import asyncpg
import pytest

from tests.helpers import SECRET, insert_link
from tracker.clicks.enrich import Enricher
from tracker.clicks.flusher import Flusher
from tracker.clicks.journal import (
    FIELDS,
    OPEN_SUFFIX,
    SEALED_SUFFIX,
    SEP,
    ClickIds,
    JournalWriter,
    RawClick,
    decode_line,
    encode_fallback,
    parse_segment,
)


def line(cid: str, ua: str = "Mozilla/5.0", link: tuple[int, int, int] = (1, 1, 1),
         ts_us: int = 1_700_000_000_000_000) -> str:
    fields = ["1", str(ts_us), cid, str(link[0]), str(link[1]), str(link[2]), "abc", "v1", "1",
              "127.0.0.1", "", "", ua, "en", "", "", "", "", "", "*/*", "a=1", ""]
    assert len(fields) == len(FIELDS)
    text = SEP.join(fields)
    if text.count(SEP) != len(FIELDS) - 1 or "\n" in text:
        return encode_fallback(fields)
    return text + "\n"


def test_click_ids_are_uuid7_time_ordered_and_unique() -> None:
    ids = ClickIds()
    other = ClickIds()
    made = [ids.new(1_700_000_000_000_000_000 + i * 1000) for i in range(5000)]
    made += [other.new(1_700_000_000_000_000_000 + i * 1000) for i in range(5000)]
    assert len(set(made)) == 10000
    first = made[:5000]
    assert first == sorted(first)
    for cid in made[:3]:
        assert len(cid) == 36 and cid[14] == "7" and cid[19] in "89ab"


def test_framing_survives_separators_in_fields() -> None:
    for ua in ("plain", "has\x00nul", "has\nnewline", "é\udcff"):
        text = line("01890000-0000-7000-8000-000000000001", ua=ua)
        assert text.endswith("\n") and text.count("\n") == 1
        click = decode_line(text[:-1])
        assert isinstance(click, RawClick)
        assert click.user_agent == ua


def test_parse_segment_skips_bad_and_torn_lines() -> None:
    good = line("01890000-0000-7000-8000-000000000001")
    fallback = line("01890000-0000-7000-8000-000000000002", ua="has\x00nul")
    not_a_time = "1\x00soon" + good[good.index("\x00", 2):]  # every field there, ts not an int
    data = (good + "garbage\n" + not_a_time + fallback + good + "1\x00torn").encode()
    clicks, bad = parse_segment(data, "seg")
    assert clicks == [decode_line(text[:-1]) for text in (good, fallback, good)]
    assert bad == 3


async def test_writer_seals_segments_and_keeps_open_one_locked(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, fsync_ms=0, max_lines=3)
    writer.open()
    for i in range(7):
        writer.write(line(f"01890000-0000-7000-8000-{i:012d}").encode())
    names = sorted(os.listdir(tmp_path))
    assert sum(n.endswith(SEALED_SUFFIX) for n in names) == 2
    assert sum(n.endswith(OPEN_SUFFIX) for n in names) == 1
    await writer.close()
    names = sorted(os.listdir(tmp_path))
    assert all(n.endswith(SEALED_SUFFIX) for n in names) and len(names) == 3


async def test_group_write_keeps_order_and_fails_only_unwritten_lines(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, fsync_ms=0, max_lines=1000)
    writer.open()
    lines = [line(f"01890000-0000-7000-8000-{i:012d}").encode() for i in range(5)]
    # Lines queued in one loop iteration share one write and one future.
    queued = [writer.submit(data) for data in lines[:3]]
    assert {id(done) for done, _ in queued} == {id(queued[0][0])}
    assert [index for _, index in queued] == [0, 1, 2]
    assert await queued[0][0] == frozenset()
    assert writer.lines == 3
    # The file cannot grow past the fourth line and a half: the write is short, the fourth line
    # is in, the torn fifth fails and so does the retry of the rest.
    assert writer._path is not None
    size = writer._path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + len(lines[3]) + 10, hard))
    try:
        more = [writer.submit(data) for data in (lines[3], lines[4], lines[0])]
        assert await more[0][0] == frozenset({1, 2})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert writer.lines == 4
    clicks, bad = parse_segment(writer._path.read_bytes(), "seg")
    assert [c.click_id for c in clicks] == [f"01890000-0000-7000-8000-{i:012d}" for i in range(4)]
    assert bad == 1  # the torn line (its ending newline could not be written either)
    # Once the file can grow, the torn line is ended first; a group still queued at close is
    # written before the segment is sealed.
    path = writer._path
    done, _ = writer.submit(lines[4])
    await writer.close()
    assert done.result() == frozenset()
    clicks, bad = parse_segment(path.with_suffix(SEALED_SUFFIX).read_bytes(), "seg")
    assert [c.click_id[-1] for c in clicks][-2:] == ["3", "4"]
    assert bad == 1


async def test_orphaned_open_segment_is_replayed_once(
    tmp_path: Path, dsn: str, conn: asyncpg.Connection
) -> None:
    link = await insert_link(conn)
    writer = JournalWriter(tmp_path, fsync_ms=0)
    writer.open()
    cids = [f"01890000-0000-7000-8000-{i:012d}" for i in range(10)]
    for i, cid in enumerate(cids):
        writer.write(line(cid, ua=f"ua{i}", link=link, ts_us=1_700_000_000_000_000 + i).encode())
    flusher = Flusher(tmp_path, dsn, Enricher(SECRET, ()))
    # The writer is alive and holds its segment: nothing to take.
    assert await flusher.flush_once() is None
    # The writer dies without sealing (its descriptor closes, as the kernel does on kill -9).
    os.close(writer._fd)
    result = await flusher.flush_once()
    assert result is not None and (result.clicks, result.stored) == (10, 10)
    assert os.listdir(tmp_path) == []
    # The same lines again (a segment whose deletion did not survive a crash) add nothing.
    (tmp_path / ("again" + SEALED_SUFFIX)).write_text("".join(
        line(cid, ua=f"ua{i}", link=link, ts_us=1_700_000_000_000_000 + i)
        for i, cid in enumerate(cids)))
    result = await flusher.flush_once()
    assert result is not None and (result.clicks, result.stored) == (10, 0)
    assert await conn.fetchval("SELECT count(*) FROM clicks") == 10
    await flusher.close()


async def test_flusher_keeps_segments_while_database_is_unreachable(
    tmp_path: Path, conn: asyncpg.Connection
) -> None:
    (tmp_path / ("s" + SEALED_SUFFIX)).write_text(line("01890000-0000-7000-8000-000000000001"))
    flusher = Flusher(tmp_path, "postgresql://nobody@127.0.0.1:1/none", Enricher(SECRET, ()))
    with pytest.raises(OSError, match=r"Connect call failed|Connection refused"):
        await flusher.flush_once()
    assert os.listdir(tmp_path) == ["s" + SEALED_SUFFIX]
    assert flusher.update_backlog(force=True) == 1


def test_the_backlog_counts_sealed_segments_as_they_come_and_go(tmp_path: Path) -> None:
    flusher = Flusher(tmp_path, "postgresql://nobody@127.0.0.1:1/none", Enricher(SECRET, ()))
    ids = iter(f"01890000-0000-7000-8000-{i:012d}" for i in range(100))
    for name, n in (("a", 2), ("b", 1)):
        (tmp_path / (name + SEALED_SUFFIX)).write_text("".join(line(next(ids)) for _ in range(n)))
    assert flusher.update_backlog(force=True) == 3
    (tmp_path / ("a" + SEALED_SUFFIX)).unlink()  # flushed
    (tmp_path / ("c" + SEALED_SUFFIX)).write_text("".join(line(next(ids)) for _ in range(4)))
    assert flusher.update_backlog(force=True) == 5
    assert flusher.update_backlog() == -1  # at most once a second unless forced
