"""The byte search the delivery loop asks of every journal record: the same answer as ``in``."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from agent import bytesearch
from agent.bytesearch import contains

BIG = 64 << 10  # past the size from which libc's memmem answers


def test_a_key_is_found_anywhere_in_a_big_batch_and_nowhere_else():
    body = os.urandom(BIG).replace(b"\xa6", b"\x00")
    key = b"\xa6_extra"
    assert not contains(body, key)
    for at in (0, 1, BIG // 2, BIG - len(key)):
        assert contains(body[:at] + key + body[at:], key)
    assert not contains(body + key[:-1], key)  # cut short at the end: not there
    assert contains(b"\x00" * BIG + key + b"\x00", key)  # after zero bytes: lengths, not C strings


def test_libc_answers_for_big_bytes_and_python_for_the_rest(monkeypatch):
    asked = []
    real = bytesearch._memmem
    if real is None:
        return
    monkeypatch.setattr(bytesearch, "_memmem", lambda *a: asked.append(a[1]) or real(*a))
    contains(bytes(BIG), b"key")
    contains(bytes(100), b"key")  # short: Python's own search
    contains(bytearray(BIG), b"key")  # not bytes: no pointer ctypes can take as is
    contains(memoryview(bytes(BIG)).tobytes(), b"")
    assert asked == [BIG]


@given(st.binary(max_size=64), st.binary(min_size=1, max_size=8), st.integers(0, 3))
def test_contains_is_in(pad, needle, repeat):
    haystack = pad * (BIG // max(len(pad), 1) + 1) + needle * repeat + pad
    assert contains(haystack, needle) == (needle in haystack)
