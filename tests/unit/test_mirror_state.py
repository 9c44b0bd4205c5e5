"""The identity map: an identifier belongs to one install, so to one app and one platform."""

import sqlite3

from agent.mirrors.state import MirrorState

APP_A = "com.com2us.misample.normal.freefull.google.global.android.common"
APP_I = "com.com2us.misample.normal.freefull.apple.global.ios.universal"


def test_a_lookup_by_uid_only_matches_identities_of_the_same_app_or_platform(tmp_path):
    state = MirrorState(tmp_path / "m.sqlite")
    assert state.learn("g", {"uid": 7, "app_id": APP_A, "appsflyer_id": "af-android", "advertising_id": "gaid"})
    assert state.learn("g", {"uid": 7, "platform": "I", "appsflyer_id": "af-ios", "idfa": "IDFA", "att": "denied"})
    assert state.lookup("g", APP_A, "A", None, 7) == {"appsflyer_id": "af-android", "advertising_id": "gaid"}
    assert state.lookup("g", APP_I, "I", None, 7) == {"appsflyer_id": "af-ios", "idfa": "IDFA", "att": 2}
    # Another Android app of the same user: its own install, not the first app's.
    assert state.lookup("g", APP_A + ".other", "A", None, 7) == {}


def test_an_app_identity_wins_over_a_platform_one_and_a_did_over_a_uid(tmp_path):
    state = MirrorState(tmp_path / "m.sqlite")
    state.learn("g", {"uid": 7, "platform": "A", "appsflyer_id": "af-platform", "advertising_id": "gaid-1"})
    state.learn("g", {"uid": 7, "app_id": APP_A, "appsflyer_id": "af-app"})
    state.learn("g", {"did": 99, "app_id": APP_A, "advertising_id": "gaid-device"})
    assert state.lookup("g", APP_A, "A", 99, 7) == {"appsflyer_id": "af-app", "advertising_id": "gaid-device"}
    assert state.lookup("g", APP_A, "A", 98, 7) == {"appsflyer_id": "af-app", "advertising_id": "gaid-1"}


def test_a_did_matches_only_its_own_device_and_the_other_platforms_ids_never_come_back(tmp_path):
    state = MirrorState(tmp_path / "m.sqlite")
    # No app, no platform: an IDFA can only be iOS.
    assert state.learn("g", {"did": 1, "appsflyer_id": "af-1", "idfa": "IDFA-1", "advertising_id": "stray"})
    assert state.lookup("g", APP_I, "I", 1, None) == {"appsflyer_id": "af-1", "idfa": "IDFA-1"}
    assert state.lookup("g", APP_I, "I", 2, None) == {}
    assert state.lookup("g", APP_A, "A", 1, None) == {}
    # Nothing tells the platform: not learned.
    assert not state.learn("g", {"did": 3, "appsflyer_id": "af-3"})


def test_identities_of_the_earlier_unscoped_table_keep_the_platform_their_ids_name(tmp_path):
    db = sqlite3.connect(tmp_path / "m.sqlite")
    db.execute(
        "CREATE TABLE identity (game TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL, appsflyer_id TEXT, "
        "advertising_id TEXT, idfa TEXT, idfv TEXT, att INTEGER, updated_ns INTEGER, "
        "PRIMARY KEY (game, kind, id))"
    )
    db.execute("INSERT INTO identity VALUES ('g', 'uid', '7', 'af-a', 'gaid', NULL, NULL, NULL, 1)")
    db.execute("INSERT INTO identity VALUES ('g', 'uid', '8', 'af-i', NULL, 'IDFA', NULL, 3, 1)")
    db.execute("INSERT INTO identity VALUES ('g', 'uid', '9', 'af-?', NULL, NULL, NULL, NULL, 1)")
    db.commit()
    db.close()
    state = MirrorState(tmp_path / "m.sqlite")
    assert state.lookup("g", APP_A, "A", None, 7) == {"appsflyer_id": "af-a", "advertising_id": "gaid"}
    assert state.lookup("g", APP_I, "I", None, 8) == {"appsflyer_id": "af-i", "idfa": "IDFA", "att": 3}
    assert state.lookup("g", APP_A, "A", None, 9) == {} and state.lookup("g", APP_I, "I", None, 9) == {}


def test_once_quiet_the_last_acceptances_are_in_the_database_not_held_until_the_next(tmp_path):
    state = MirrorState(tmp_path / "m.sqlite")
    state.mark_delivered("appsflyer", APP_A, "T-1")
    other = sqlite3.connect(tmp_path / "m.sqlite")
    assert other.execute("SELECT count(*) FROM delivered").fetchone()[0] == 0  # in the log, folded later
    state.shrink()
    assert other.execute("SELECT key FROM delivered").fetchall() == [("T-1",)]
    assert state.was_delivered("appsflyer", APP_A, "T-1")
    assert (tmp_path / "m.sqlite.appsflyer.delivered.log").stat().st_size == 0
