"""The JSON-lines codec: whole, byte by byte, with trailing bytes; and what it tells the position file."""

import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.protocol.jsonlines import LineSplitter, TooLong, parse_each, parse_lines, to_entries

LINES = [b'{"seq":1,"name":"a"}', b'{"seq":2,"name":"\xea\xb2\x8c\xec\x9e\x84"}', b'{"seq":3}']
DATA = b"\n".join(LINES) + b"\n"


def feed_all(chunks, max_line_size=1 << 20):
    splitter = LineSplitter(0, max_line_size)
    out = []
    for chunk in chunks:
        start, lines = splitter.feed(chunk)
        out.append((start, lines))
    return splitter, out


def as_list(lines):
    """feed() gives a region of whole lines (bytes) or a list; compare them as lists of lines."""
    return lines[:-1].split(b"\n") if isinstance(lines, bytes) else lines


def flat(out):
    return [line for _, lines in out for line in as_list(lines)]


def test_whole_input_gives_every_line_and_the_offset_after_it():
    splitter, out = feed_all([DATA])
    assert flat(out) == LINES
    assert out[0][0] == 0
    assert splitter.consumed == len(DATA) and splitter.buffered == 0


def test_byte_by_byte_gives_the_same_lines():
    splitter, out = feed_all([DATA[i : i + 1] for i in range(len(DATA))])
    assert flat(out) == LINES
    assert splitter.consumed == len(DATA)


def test_trailing_bytes_without_newline_wait_and_are_not_consumed():
    splitter, out = feed_all([DATA + b'{"seq":4'])
    assert flat(out) == LINES
    assert splitter.consumed == len(DATA)  # a position saved now resumes on the partial line's start
    assert splitter.buffered == len(b'{"seq":4')
    start, lines = splitter.feed(b"}\n")
    assert (start, as_list(lines)) == (len(DATA), [b'{"seq":4}'])


@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    st.lists(st.integers(1, 50), min_size=1, max_size=20),
)
def test_any_split_of_the_stream_gives_the_same_lines_at_the_same_offsets(lines, cuts):
    data = b"".join(line + b"\n" for line in lines)
    chunks, pos = [], 0
    for cut in cuts * (len(data) // max(1, sum(cuts)) + 1):
        chunks.append(data[pos : pos + cut])
        pos += cut
        if pos >= len(data):
            break
    splitter = LineSplitter(100, 1 << 20)
    got = []
    for chunk in chunks:
        start, out = splitter.feed(chunk)
        for line in as_list(out):
            got.append((start, line))
            start += len(line) + 1
    expected, off = [], 100
    for line in lines:
        expected.append((off, line))
        off += len(line) + 1
    assert got == expected
    assert splitter.consumed == 100 + len(data)


def test_an_overlong_line_is_dropped_without_being_held_and_reported_with_its_offset():
    splitter = LineSplitter(0, max_line_size=100)
    _, lines = splitter.feed(b'{"seq":1}\n' + b"x" * 150)
    assert as_list(lines) == [b'{"seq":1}']
    assert splitter.buffered == 150
    for _ in range(1000):  # 10 MB more of the same line: nothing accumulates
        _, more = splitter.feed(b"y" * 10_000)
        assert as_list(more) == []
    assert len(splitter._partial) == 0
    start, lines = splitter.feed(b'z\n{"seq":2}\n')
    assert isinstance(lines[0], TooLong)
    assert lines[0].offset == 10 and lines[0].length == 150 + 10_000_000 + 2
    assert lines[0].head.startswith(b"x" * 100)
    assert lines[1] == b'{"seq":2}'
    assert splitter.consumed == 10 + lines[0].length + len(b'{"seq":2}\n')


def test_an_overlong_line_inside_one_chunk_is_reported_in_place():
    _, lines = LineSplitter(0, 20).feed(b'{"a":1}\n' + b"q" * 30 + b'\n{"b":2}\n')
    assert lines[0] == b'{"a":1}' and lines[2] == b'{"b":2}'
    assert lines[1] == TooLong(8, 31, b"q" * 30)


def test_reset_starts_again_at_an_offset():
    splitter = LineSplitter(0, 100)
    splitter.feed(b'{"a":1}\n{"b"')
    splitter.reset(0)
    assert splitter.consumed == 0 and splitter.buffered == 0
    assert splitter.feed(b'{"c":3}\n') == (0, b'{"c":3}\n')


def test_parse_reports_each_bad_line_with_its_offset_and_reason_and_keeps_the_rest():
    lines = [b'{"a":1}', b"not json", b"[1,2]", b"", b'{"b":2}', TooLong(40, 500, b"xxx")]
    parsed = parse_lines(lines, 1000)
    assert parsed.records == [{"a": 1}, {"b": 2}]
    reasons = [(b.offset, b.reason.split(":")[0], b.text) for b in parsed.bad]
    assert reasons == [
        (1008, "invalid_json", "not json"),
        (1017, "not_an_object", "[1,2]"),
        (40, "line_too_long", "xxx"),
    ]


def test_invalid_utf8_is_replaced_and_counted_not_fatal():
    parsed = parse_lines([b'{"name":"caf\xe9"}', b'{"ok":true}'], 0)
    assert parsed.records == [{"name": "caf\ufffd"}, {"ok": True}]
    assert parsed.invalid_utf8 == 1 and parsed.bad == []


def test_entries_are_forward_entries_with_the_event_time():
    records = [orjson.loads(line) for line in LINES]
    data = to_entries(records * 7, 1_700_000_000_123_456_789)  # past 16: a longer array header
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    entries = list(unpacker)
    assert [e[1] for e in entries] == records * 7
    ext = entries[0][0]
    assert ext.code == 0 and int.from_bytes(ext.data[:4], "big") == 1_700_000_000
    assert int.from_bytes(ext.data[4:], "big") == 123_456_789


@pytest.mark.parametrize("line", [b'{"a":1},{"b":2}', b'{"a":1} {"b":2}', b'{"a":1}]'])
def test_a_line_holding_other_than_one_object_is_bad_even_in_a_batch(line):
    parsed = parse_lines(b'{"x":0}\n' + line + b'\n{"y":1}\n', 0)
    assert parsed.records == [{"x": 0}, {"y": 1}]
    assert len(parsed.bad) == 1 and parsed.bad[0].offset == 8


def test_the_region_of_lines_parses_like_the_lines_one_by_one():
    region = b'{"a":1}\n\n{"b":"caf\xe9"}\n{"c":[1,2]}\nnope\n'
    assert parse_lines(region, 0) == parse_lines(region[:-1].split(b"\n"), 0)
    assert parse_lines(b'{"a":1}\n{"b":2}\n', 0).records == [{"a": 1}, {"b": 2}]


@pytest.mark.parametrize(
    "big", [b"18446744073709551616", b"-9223372036854775809", b"[1, 123456789012345678901234567890]"]
)
def test_a_line_with_an_integer_beyond_64_bits_is_refused_with_its_reason_never_made_a_float(big):
    region = b'{"a":1}\n{"uid":' + big + b'}\n{"b":18446744073709551615}\n'
    with pytest.raises(OverflowError):  # msgpack has no such integer: the tail input goes line by line
        to_entries(parse_lines(region, 0).records, 0)
    parsed = parse_each(region, 0)
    assert parsed.records == [{"a": 1}, {"b": 18446744073709551615}]  # the largest uint64 is kept exactly
    [bad] = parsed.bad
    assert (bad.offset, bad.reason.split(":")[0]) == (8, "integer_out_of_range")
    assert to_entries(parsed.records, 0)


@pytest.mark.parametrize("lengths", [[5] * 40, [19, 20, 20, 3], [20, 21, 2], [1, 2, 50], [60], [20] * 10 + [21]])
def test_the_long_line_check_agrees_with_measuring_every_line(lengths):
    region = b"".join(b"a" * n + b"\n" for n in lengths)
    splitter = LineSplitter(0, max_line_size=20)
    assert splitter._has_long_line(region) == (max(lengths) > 20)
