"""What every HTTP output makes of an answer: no redirect followed, and a bounded answer read.

The client that sends the POSTs is agent/outputs/http_client.py.

No redirect: a destination that answers 3xx with a Location elsewhere would otherwise get
the purchases, and a client that follows it (aiohttp's, by default) strips only
``Authorization`` on the way, so the AppsFlyer ``authentication`` token, the Wisetracker
``authToken`` or an http output's own header would travel with them, in clear if the
Location says http. A 3xx is a failed send the delivery loop retries (and dead-letters when
its retries run out, as a 5xx): a moved endpoint is an operator's change to make, and until
then the purchases wait in the journal.

A bounded answer: at most ``MAX_ANSWER_BYTES`` of a body are read (the excerpt a log line
or a dead letter keeps is shorter still); when more remain, the connection is closed rather
than drained, so a destination answering 1 GiB costs the agent 4 KiB.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from agent.secrets import scrub

MAX_ANSWER_BYTES = 4096


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes  # at most MAX_ANSWER_BYTES
    location: str  # a redirect's target, as scheme://host, else ""

    @property
    def redirect(self) -> bool:
        return 300 <= self.status < 400

    def excerpt(self, limit: int) -> str:
        """The answer as one line of at most ``limit`` characters, secrets masked before the cut
        (cut first, and a token straddling the cut would show all but its last characters)."""
        return " ".join(scrub(self.body.decode("utf-8", "replace")).split())[:limit]

    def refused_redirect(self, url: str) -> str:
        where = f" to {self.location}" if self.location else ""
        return f"HTTP {self.status} from {url}: a redirect{where}, not followed (outputs never follow one)"


def origin(location: str) -> str:
    """Where a redirect points, as scheme://host[:port] only (no path, no credentials)."""
    try:
        parts = urllib.parse.urlsplit(location[:2048])
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return ""
    if not host:
        return ""
    return f"{parts.scheme or 'http'}://{host}{port}"[:200]
