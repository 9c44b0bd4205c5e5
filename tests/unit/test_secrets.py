"""Configured secrets never reach a log line, a dead letter, or what the monitor and check show."""

import logging
import tomllib

from agent import secrets
from agent.config.document import AgentConfig
from agent.deadletter import DeadLetterStore

CONFIG = """
[[inputs]]
type = "forward"
shared_key = "forward-shared-key"
[[outputs]]
type = "http"
url = "https://hive:url-password@collector.example:8443/base"
headers = { X-Token = "header-token-1" }
[[outputs]]
type = "wisetracker"
[outputs.apps."com.game"]
service_number = 7
token = "wisetracker-token"
"""


def config() -> AgentConfig:
    return AgentConfig.validate(tomllib.loads(CONFIG))


def test_every_kind_of_configured_secret_is_known():
    found = secrets.secret_values(config())
    assert {"forward-shared-key", "url-password", "hive:url-password", "header-token-1", "wisetracker-token"} <= found


def test_urls_are_shown_without_their_password():
    assert secrets.redact_url("https://hive:pw@h.example:8443/x?q=1") == "https://hive:***@h.example:8443/x?q=1"
    assert secrets.redact_url("https://h.example/x") == "https://h.example/x"


def test_log_lines_and_dead_letters_are_scrubbed(tmp_path, caplog):
    handler = logging.StreamHandler()
    logging.getLogger().addHandler(handler)
    try:
        secrets.install(config())
        record = logging.LogRecord(
            "agent",
            logging.ERROR,
            __file__,
            1,
            "HTTP 400 from %s: echo %s",
            ("https://hive:url-password@collector.example:8443", "wisetracker-token"),
            None,
        )
        for f in handler.filters:
            f.filter(record)
        assert "url-password" not in record.getMessage() and "wisetracker-token" not in record.getMessage()
        assert "***" in record.getMessage()
        store = DeadLetterStore(tmp_path / "deadletter")
        store.write_records("out", [("t", 0, {"note": "forward-shared-key"}, "HTTP 400: header-token-1 echoed")])
        text = (tmp_path / "deadletter/out.jsonl").read_text()
        assert "forward-shared-key" not in text and "header-token-1" not in text and "***" in text
    finally:
        logging.getLogger().removeHandler(handler)
        secrets.install(
            AgentConfig.validate(tomllib.loads('[[inputs]]\ntype = "forward"\n[[outputs]]\ntype = "stdout"\n'))
        )
