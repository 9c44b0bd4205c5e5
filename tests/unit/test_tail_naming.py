"""How the tail input names things: tags from paths (Fluentd's rules), and what it watches."""

import re

import pytest

from agent.inputs.tail.discovery import expand_tag, watch_root


@pytest.mark.parametrize(
    "tag,path,expected",
    [
        # fluentd in_tail: '/' → '.', runs of dots collapse, no leading dot, the first '*' only.
        ("ha2union.game.*", "/var/log/game/x.log", "ha2union.game.var.log.game.x.log"),
        ("foo.*", "/var/log//a..log", "foo.var.log.a.log"),
        ("a.*.b.*", "/x.log", "a.x.log.b.*"),
        ("plain.tag", "/x.log", "plain.tag"),
    ],
)
def test_star_expands_to_the_path_as_fluentd_does(tag, path, expected):
    assert expand_tag(tag, path, None) == expected


def test_tag_regex_named_groups_fill_the_tag():
    rx = re.compile(r"/logs/(?P<game>[^/]+)/")
    assert (
        expand_tag("ha2union.game.{game}.purchase_log", "/logs/samplegame/purchase.log", rx)
        == "ha2union.game.samplegame.purchase_log"
    )
    assert expand_tag("ha2union.game.{game}.purchase_log", "/other/purchase.log", rx) is None


@pytest.mark.parametrize(
    "pattern,root,recursive",
    [
        ("/var/log/game/*.json", "/var/log/game", False),
        ("/var/log/game/*/purchase*.json", "/var/log/game", True),
        ("/var/log/**/x.log", "/var/log", True),
        ("/var/log/one.log", "/var/log", False),
    ],
)
def test_the_directory_watched_for_a_pattern(pattern, root, recursive):
    assert watch_root(pattern) == (root, recursive)
