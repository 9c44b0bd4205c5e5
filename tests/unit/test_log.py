"""One event, one log line: whatever a peer wrote into the message."""

import logging

from agent.log import Summary, _OneLineFormatter, peer_text


def test_peer_text_is_escaped_and_bounded():
    assert peer_text(b"evil\nINFO forged\r\x1b[31m") == "evil\\nINFO forged\\r\\x1b[31m"
    long = peer_text(b"h" * (4 << 20))
    assert len(long) < 200 and long.startswith("h" * 120) and "characters" in long


def test_the_text_format_never_breaks_a_line():
    record = logging.LogRecord("agent", logging.WARNING, __file__, 1, "peer %s said %s", ("a\nb", "c\rd"), None)
    line = _OneLineFormatter("%(levelname)s %(message)s").format(record)
    assert "\n" not in line and "\r" not in line and line == "WARNING peer a\\nb said c\\rd"


def test_a_summary_holds_back_repeats_and_counts_them():
    now = [0.0]
    summary = Summary(60.0, clock=lambda: now[0])
    assert summary.should_log(("1.2.3.4", "auth")) == 0
    assert all(summary.should_log(("1.2.3.4", "auth")) is None for _ in range(199))
    assert summary.should_log(("5.6.7.8", "auth")) == 0  # another peer is not held back
    now[0] = 61.0
    assert summary.should_log(("1.2.3.4", "auth")) == 199
