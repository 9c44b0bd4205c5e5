"""Fluentd's own match tables (test/test_match.rb), ported as golden cases."""

import pytest

from agent.routing import compile_pattern

MATCH = [
    ("a", "a"),
    ("a.b", "a.b"),
    ("a*", "a"),
    ("a*", "ab"),
    ("a*", "abc"),
    ("*a", "a"),
    ("*a", "ba"),
    ("*a", "cba"),
    ("*a*", "a"),
    ("*a*", "ba"),
    ("*a*", "ac"),
    ("*a*", "bac"),
    ("a.*", "a.b"),
    ("a.*", "a.c"),
    ("a.*.c", "a.b.c"),
    ("a.*.c", "a.c.c"),
    ("a.**", "a"),
    ("a.**", "a.b"),
    ("a**", "a"),
    ("a**", "ab"),
    ("a**", "abc"),
    ("a**", "a.b"),
    ("a**", "ab.c"),
    ("a**", "ab.d.e"),
    ("**.a", "a"),
    ("**.a", "b.a"),
    ("**.a", "cb.a"),
    ("**.a", "d.e.a"),
    ("**a", "a"),
    ("**a", "ba"),
    ("**a", "c.ba"),
    ("**a", "b.a"),
    ("**a", "cb.a"),
    ("**a", "d.e.a"),
    ("a.{b,c}", "a.b"),
    ("a.{b,c}", "a.c"),
    ("a.{b,c}.**", "a.b"),
    ("a.{b,c}.**", "a.c"),
    ("a.{b.**,c}", "a.b"),
    ("a.{b.**,c}", "a.b.c"),
    ("a.{b.**,c}", "a.c"),
    # ours: several patterns, regex, the Hive tags
    ("x a.b", "a.b"),
    ("/^ha2union\\.game\\.[a-z]+\\.purchase_log$/", "ha2union.game.sg.purchase_log"),
    ("ha2union.game.*.purchase_log", "ha2union.game.samplegame.purchase_log"),
    ("**", "anything.at.all"),
    ("**", ""),
]
NO_MATCH = [
    ("a", "b"),
    ("a.b", "aab"),
    ("a*", "a.b"),
    ("a*", "ab.c"),
    ("a*", "ba"),
    ("*a", "ab"),
    ("a.*", "ab"),
    ("a.*.c", "a.c"),
    ("a.**", "ab"),
    ("a.**", "abc"),
    ("a.**", "ab.c"),
    ("a.**", "ab.d.e"),
    ("**.a", "ba"),
    ("**.a", "c.ba"),
    ("a.{b,c}", "a.d"),
    ("a.{b,c}.**", "a.d"),
    ("a.{b,c}.**", "a.cd"),
    ("a.{b.**,c}", "a.c.d"),
    ("ha2union.game.*.purchase_log", "ha2union.game.a.b.purchase_log"),
    ("ha2union.game.*.purchase_log", "ha2union.game.samplegame.device_ids"),
]


@pytest.mark.parametrize("pattern,tag", MATCH)
def test_matches(pattern, tag):
    assert compile_pattern(pattern)(tag)


@pytest.mark.parametrize("pattern,tag", NO_MATCH)
def test_does_not_match(pattern, tag):
    assert not compile_pattern(pattern)(tag)


def test_dots_and_regex_characters_are_literal():
    assert not compile_pattern("a.b")("axb")
    assert compile_pattern("a+b")("a+b")
