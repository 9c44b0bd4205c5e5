"""The journal: framing, group commit, recovery of a torn tail, limits, collection, and the reader."""

import asyncio
import os

import pytest

from agent.journal.batch import decode_entries
from agent.journal.cursor import CursorStore, Position
from agent.journal.journal import Journal
from agent.journal.reader import JournalReader
from agent.journal.record import HEADER_SIZE, Torn, batch_payload, encode_record, iter_records, peek_tag
from agent.journal.segment import list_segments, segment_path
from tests.wire import event_time, pack

T = 1_700_000_000


def entries(n, start=0):
    return b"".join(pack([event_time(T, i), {"i": i}]) for i in range(start, start + n))


async def started(directory, **options) -> Journal:
    j = Journal(directory, **options)
    j.recover()
    await j.start()
    return j


def read_all(directory, position=None):
    reader = JournalReader(directory, position)
    out = []
    while True:
        recs = reader.read()
        if not recs:
            reader.close()
            return out, reader.position
        for r in recs:
            tag, decoded = decode_entries(r.payload)
            out += [(tag, t, rec["i"]) for t, rec in decoded]


def test_record_framing_round_trip_and_checks():
    payloads = [batch_payload("t.x", entries(3), 3), batch_payload("other", entries(1), 1)]
    data = b"".join(encode_record(p) for p in payloads)
    assert [p for _, p, _ in iter_records(data)] == payloads
    assert peek_tag(payloads[0]) == "t.x"
    long_tag = "x" * 300
    assert peek_tag(batch_payload(long_tag, entries(1), 1)) == long_tag
    with pytest.raises(Torn, match="truncated"):
        list(iter_records(data[:-1]))
    corrupt = bytearray(data)
    corrupt[12] ^= 0xFF
    with pytest.raises(Torn, match="checksum"):
        list(iter_records(bytes(corrupt)))


async def test_appends_are_durable_in_order_and_concurrent_appends_share_fsyncs(tmp_path):
    j = await started(tmp_path, fsync="always")
    await asyncio.gather(*(j.submit("t", entries(10, k * 10), 10) for k in range(50)))
    assert j.stats.fsyncs < 50  # group commit
    await j.close()
    events, _ = read_all(tmp_path)
    assert sorted(e[2] for e in events) == list(range(500))
    assert all(e[1] == T * 10**9 + e[2] for e in events)


async def test_torn_tail_is_cut_and_everything_before_it_kept(tmp_path):
    j = await started(tmp_path)
    for k in range(5):
        await j.submit("t", entries(10, k * 10), 10)
    await j.close()
    [seq] = list_segments(tmp_path)
    path = segment_path(tmp_path, seq)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 7)  # tear the last record mid-way
    j2 = Journal(tmp_path)
    j2.recover()
    assert j2.stats.recovered_records == 4
    assert j2.stats.cut_bytes > 0
    await j2.start()
    await j2.submit("t", entries(1, 1000), 1)
    await j2.close()
    events, _ = read_all(tmp_path)
    assert [e[2] for e in events] == list(range(40)) + [1000]


async def test_a_damaged_record_mid_segment_is_set_aside_and_every_record_after_it_kept(tmp_path):
    jdir = tmp_path / "journal"
    j = await started(jdir)
    for k in range(10):
        await j.submit("t", entries(100, k * 100), 100)
    await j.close()
    path = segment_path(jdir, list_segments(jdir)[0])
    data = bytearray(path.read_bytes())
    ends = [end for end, _, _ in iter_records(bytes(data), HEADER_SIZE)]
    fifth, record = ends[3], ends[4] - ends[3]
    # A cursor that had passed the damage (after record 7) must still point at a record boundary.
    after_seven = Position(list_segments(jdir)[0], ends[6])
    data[fifth + 300] ^= 0x01  # one flipped bit in record 5 of 10
    path.write_bytes(bytes(data))
    j2 = Journal(jdir)
    j2.recover()
    assert j2.stats.recovered_records == 9
    assert (j2.stats.damaged_regions, j2.stats.quarantined_bytes) == (1, record)
    [kept] = list((tmp_path / "quarantine").iterdir())
    assert kept.read_bytes() == bytes(data[fifth : fifth + record]) and kept.stat().st_mode & 0o777 == 0o600
    assert path.stat().st_size == len(data)  # offsets unchanged
    events, _ = read_all(jdir)
    assert [e[2] for e in events] == [i for i in range(1000) if not 400 <= i < 500]
    events, _ = read_all(jdir, after_seven)
    assert [e[2] for e in events] == list(range(700, 1000))
    j3 = Journal(jdir)
    j3.recover()  # recovering again finds nothing more to do
    assert j3.stats.recovered_records == 10 and j3.stats.damaged_regions == 0  # the filler counts


@pytest.mark.parametrize("seed", range(12))
async def test_random_damage_and_truncation_keep_every_intact_record(tmp_path, seed):
    import random

    rng = random.Random(seed)
    jdir = tmp_path / "journal"
    j = await started(jdir, segment_bytes=64 * 1024)
    for k in range(60):
        await j.submit("t", entries(20, k * 20), 20)
    await j.close()
    intact: set[int] = set()
    for seq in list_segments(jdir):
        path = segment_path(jdir, seq)
        data = bytearray(path.read_bytes())
        spans = []  # (start, end, events) of each record as written
        start = HEADER_SIZE
        for end, payload, _ in iter_records(bytes(data), HEADER_SIZE):
            spans.append((start, end, {rec["i"] for _, rec in decode_entries(payload)[1]}))
            start = end
        flips = [rng.randrange(HEADER_SIZE, len(data)) for _ in range(rng.randint(0, 4))]
        for at in flips:
            data[at] ^= 1 << rng.randrange(8)
        cut = rng.randrange(HEADER_SIZE, len(data) + 1) if rng.random() < 0.5 else len(data)
        path.write_bytes(bytes(data[:cut]))
        for start, end, events in spans:
            if end <= cut and not any(start <= at < end for at in flips):
                intact |= events
    j2 = Journal(jdir)
    j2.recover()  # never raises
    events, _ = read_all(jdir)
    got = [e[2] for e in events]
    assert len(got) == len(set(got))
    assert set(got) == intact


async def test_segments_roll_and_are_collected_once_every_cursor_passed(tmp_path):
    j = await started(tmp_path, segment_bytes=4096, max_bytes=1 << 20)
    for k in range(150):
        await j.submit("t", entries(10, k * 10), 10)
    segs = j.segments()
    assert len(segs) > 3
    events, end = read_all(tmp_path)
    assert [e[2] for e in events] == list(range(1500))
    j.collect([Position(segs[0], 0), end])  # one output still at the start: nothing goes
    assert j.segments() == segs
    j.collect([end, end])
    assert j.segments() == [end.segment]
    assert list_segments(tmp_path) == [end.segment]
    await j.close()


async def test_full_journal_reports_full_until_collected(tmp_path):
    j = Journal(tmp_path, segment_bytes=4096, max_bytes=8192)
    room = []
    j.on_room(lambda: room.append(1))
    j.recover()
    await j.start()
    while not j.is_full():
        await j.submit("t", entries(10), 10)
    _, end = read_all(tmp_path)
    j.collect([end])
    assert not j.is_full() and room
    await j.close()


async def test_a_failed_write_is_rolled_back_and_not_acknowledged(tmp_path, monkeypatch):
    j = await started(tmp_path)
    await j.submit("t", entries(1), 1)
    real_write = os.write
    calls = {"n": 0}

    def failing_write(fd, data):
        calls["n"] += 1
        real_write(fd, bytes(data)[:5])  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("agent.journal.journal.os.write", failing_write)
    with pytest.raises(OSError):
        await j.submit("t", entries(1, 1), 1)
    assert j.write_error == "No space left on device"  # /health says so until a write succeeds
    monkeypatch.setattr("agent.journal.journal.os.write", real_write)
    await j.submit("t", entries(1, 2), 1)
    assert j.write_error is None
    await j.close()
    events, _ = read_all(tmp_path)
    assert [e[2] for e in events] == [0, 2]


async def test_every_start_writes_a_new_segment(tmp_path):
    for _ in range(3):
        j = Journal(tmp_path)
        j.recover()
        await j.start()
        await j.submit("t", entries(1), 1)
        await j.close()
    assert len(list_segments(tmp_path)) == 3


async def test_reader_waits_at_a_partial_record_and_resumes_from_a_cursor(tmp_path):
    j = await started(tmp_path)
    await j.submit("t", entries(3), 3)
    events, pos = read_all(tmp_path)
    assert len(events) == 3
    # A partial record at the end (a write in progress) is not there yet.
    seg = segment_path(tmp_path, pos.segment)
    full = encode_record(batch_payload("t", entries(2, 10), 2))
    with open(seg, "ab") as f:
        f.write(full[:10])
    reader = JournalReader(tmp_path, pos)
    assert reader.read() == []
    assert reader.position == pos
    with open(seg, "ab") as f:
        f.write(full[10:])
    [rec] = reader.read()
    reader.close()
    assert [r["i"] for _, r in decode_entries(rec.payload)[1]] == [10, 11]
    await j.close()


async def test_a_record_larger_than_a_read_is_read_alone_not_with_the_rest_of_its_segment(tmp_path):
    j = await started(tmp_path)
    await j.submit("t", entries(3000), 3000)  # about 40 KiB
    for k in range(200):  # then 4 MiB more in the same segment
        await j.submit("t", entries(1000, 10_000 + k * 1000), 1000)
    await j.close()
    reader = JournalReader(tmp_path)
    [big] = reader.read(4096)
    assert len(decode_entries(big.payload)[1]) == 3000
    assert reader._file is not None and reader._file.tell() == big.next.offset  # nothing past it
    assert len(reader.read(4096)) == 1  # and on to the next, one at a time
    reader.close()


def test_cursor_store_round_trip(tmp_path):
    store = CursorStore(tmp_path)
    assert store.load("out") is None
    store.save("out", Position(3, 1234))
    assert store.load("out") == Position(3, 1234)
    (tmp_path / "out.json").write_text("{garbage")
    assert store.load("out") is None


async def test_events_after_a_position_are_counted_as_written_and_after_recovery(tmp_path):
    j = await started(tmp_path, segment_bytes=4096)
    positions = []
    for k in range(30):
        positions.append(await j.submit("t", entries(20, k * 20), 20))
    await j.close()
    assert len(j.segments()) > 2  # the count spans whole segments and a part of one
    for n, position in ((0, positions[0]), (9, positions[9]), (29, positions[29])):
        later, rest = j.events_after(position)
        assert later + rest() == (29 - n) * 20
    j2 = Journal(tmp_path, segment_bytes=4096)
    j2.recover()  # the counts per segment come back from the segments themselves
    later, rest = j2.events_after(positions[3])
    assert later + rest() == 26 * 20


async def _ten_thousand(jdir) -> tuple[int, bytes]:
    j = await started(jdir)
    for k in range(10):
        await j.submit("t", entries(1000, k * 1000), 1000)
    await j.close()
    seq = list_segments(jdir)[0]
    return seq, segment_path(jdir, seq).read_bytes()


@pytest.mark.parametrize("bit", [0, 37, 64, 71, 72, 87, 100, 127])  # magic, version, flags, reserved
async def test_one_flipped_bit_in_a_segment_header_costs_no_record(tmp_path, bit):
    jdir = tmp_path / "journal"
    seq, data = await _ten_thousand(jdir)
    damaged = bytearray(data)
    damaged[bit // 8] ^= 1 << (bit % 8)
    segment_path(jdir, seq).write_bytes(bytes(damaged))
    j = Journal(jdir)
    j.recover()
    events, _ = read_all(jdir)
    assert [e[2] for e in events] == list(range(10_000))
    assert not list(jdir.glob("*.corrupt"))
    assert segment_path(jdir, seq).read_bytes() == data  # the header this agent writes, back in place
    assert (j.stats.quarantined_bytes, j.stats.damaged_regions) == (HEADER_SIZE, 1)
    assert (tmp_path / "quarantine" / f"{seq:016d}.header.bin").read_bytes() == bytes(damaged[:HEADER_SIZE])


async def test_a_header_zeroed_whole_costs_no_record_and_the_first_record_damaged_too_costs_one(tmp_path):
    jdir = tmp_path / "journal"
    seq, data = await _ten_thousand(jdir)
    damaged = bytearray(data)
    damaged[:HEADER_SIZE] = bytes(HEADER_SIZE)
    segment_path(jdir, seq).write_bytes(bytes(damaged))
    Journal(jdir).recover()
    assert [e[2] for e in read_all(jdir)[0]] == list(range(10_000))
    damaged[: HEADER_SIZE + 40] = bytes(HEADER_SIZE + 40)  # and the first record's start
    segment_path(jdir, seq).write_bytes(bytes(damaged))
    Journal(jdir).recover()
    assert [e[2] for e in read_all(jdir)[0]] == list(range(1000, 10_000))


async def test_a_segment_of_another_version_is_refused_by_name(tmp_path):
    jdir = tmp_path / "journal"
    jdir.mkdir(parents=True)
    from agent.journal.record import MAGIC, SEGMENT_HEADER

    other = SEGMENT_HEADER.pack(MAGIC, 2, 0, 0) + os.urandom(4096)  # whatever version 2 holds
    segment_path(jdir, 7).write_bytes(other)
    j = Journal(jdir)
    j.recover()
    assert 7 not in list_segments(jdir)
    assert segment_path(jdir, 7).with_suffix(".corrupt").read_bytes() == other
