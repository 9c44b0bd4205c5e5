"""Keeping configured secrets out of everything the agent logs, serves and writes.

The config marks secrets as such (shared keys, passwords, tokens, header values:
``Secret`` in agent/config/types.py), and URLs may carry credentials (``http://user:pass@…``).
A vendor or collector that echoes what it received would put them in a log line
or a dead letter's reason; :class:`Scrubber` replaces every occurrence of each
known secret value, in each of the forms it travels in (:func:`forms`), and
:func:`redact_url` hides a URL's password wherever a URL is shown. Scrub first,
cut after: an excerpt cut before scrubbing can end inside a secret and keep
all of it but its last characters.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.parse
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agent.config.types import Secret, Strict, field_names

MASK = "***"
MIN_SECRET = 4  # a shorter "secret" would mask ordinary text everywhere


def redact_url(url: str) -> str:
    """The URL with its password (and the user, when there is a password) replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{parts.username or ''}:{MASK}@{host}", parts.path, parts.query, parts.fragment))


def secret_values(config: Any) -> set[str]:
    """Every secret value a config holds: Secret fields anywhere, and URL credentials."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, Secret):
            found.add(value.get_secret_value())
        elif isinstance(value, Strict):
            for name in field_names(value):
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, str) and "://" in value and "@" in value:
            parts = urlsplit(value)
            if parts.password:
                found.add(parts.password)
                found.add(f"{parts.username}:{parts.password}")

    walk(config)
    return {s for s in found if len(s) >= MIN_SECRET}


def forms(secret: str) -> set[str]:
    """The spellings a secret takes on its way out and back: as configured; URL-encoded (a query
    string, a form body); base64 (HTTP Basic: ``user:pass`` from a URL's credentials); and
    JSON-escaped, also with ``\\/`` for ``/`` (a destination echoing the request as JSON)."""
    raw = secret.encode()
    spelled = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote(secret),
        urllib.parse.quote_plus(secret),
    }
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        spelled.add(encoded.decode())
        spelled.add(encoded.rstrip(b"=").decode())
    for escaped in (json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]):
        spelled.add(escaped)
        spelled.add(escaped.replace("/", "\\/"))
    return {form for form in spelled if len(form) >= MIN_SECRET}


class Scrubber:
    def __init__(self, secrets: Iterable[str] = ()):
        # Longest first, so that "user:pass" goes before "pass".
        self.secrets = sorted({form for secret in secrets for form in forms(secret)}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


class ScrubFilter(logging.Filter):
    """A logging filter: the message, its arguments rendered in, with every secret masked."""

    def __init__(self, scrubber: Scrubber):
        super().__init__()
        self.scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        if self.scrubber.secrets:
            message = record.getMessage()
            cleaned = self.scrubber(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
            if record.exc_info and record.exc_text is None and record.exc_info[1] is not None:
                record.exc_text = self.scrubber(logging.Formatter().formatException(record.exc_info))
            elif record.exc_text:
                record.exc_text = self.scrubber(record.exc_text)
        return True


_current = Scrubber()  # this process's, once install() has run
_known: set[str] = set()  # every secret of every config installed


def scrub(text: str) -> str:
    """``text`` with every secret of this process's config masked."""
    return _current(text)


def install(config: Any) -> Scrubber:
    """Know this config's secrets: every handler of the root logger scrubs from now on, and so
    does :func:`scrub` (dead letters, what the monitor serves). Installed again (a reload), it
    adds the new config's secrets to those it knew: a reply to a request made with the old
    token may still arrive."""
    global _current
    _current = Scrubber(secret_values(config) | _known)
    _known.update(secret_values(config))
    for handler in logging.getLogger().handlers:
        mine = [f for f in handler.filters if isinstance(f, ScrubFilter)]
        if mine:
            for f in mine:
                f.scrubber = _current
        else:
            handler.addFilter(ScrubFilter(_current))
    return _current
