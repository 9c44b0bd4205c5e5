"""``type = "http"``: Hive's HTTP ingestion, ``POST {url}/v1/server-recv``.

The body is ``{"appId": <app_id>, "logBody": [record, ...]}`` (gzip'd with
``compress = "gzip"``), one request per app and per ``batch_records`` /
``batch_bytes``. Each record carries the spec's fields (never the fields kept
for the mirrors), plus ``dateTime``, which the transport requires: the event
time written in the record's own ``timezone`` (KST when it has none).

Answers, as the delivery loop needs them:
  2xx OK; timeouts, connection errors, 408, 429 and 5xx RETRY;
  401 and 403 PAUSE (credentials: alert, keep the backlog);
  any other 4xx: the records of that request are dead-lettered with the
  response, and the others go on.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import orjson
from msgspec import Meta

from agent.component import DeadRecord, Outcome, Output
from agent.config.types import HttpUrl, Interval, KeyStyle, OutputConfigBase, Secret, Size
from agent.errors import HttpError
from agent.hive.records import render
from agent.hive.times import KST_OFFSET, parse_timezone, timezone_missing
from agent.journal.batch import TagBatch
from agent.outputs.http_client import HttpClient
from agent.render import to_json
from agent.secrets import redact_url

log = logging.getLogger("agent.output.http")

RETRY_STATUSES = {408, 429}
PAUSE_STATUSES = {401, 403}


def date_time(time_ns: int, tz: object) -> str:
    """The event time as "YYYY-MM-DD HH:MM:SS" in the record's timezone (KST when it has none).

    A timezone that is present but not understood is not guessed: the time is then
    written in ISO 8601 UTC, which the transport accepts too."""
    offset = KST_OFFSET if timezone_missing(tz) else parse_timezone(tz)
    if offset is None:
        return datetime.fromtimestamp(time_ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return datetime.fromtimestamp(time_ns / 1e9, timezone(offset)).strftime("%Y-%m-%d %H:%M:%S")


def hive_records(batch: TagBatch, key_style: str = "snake") -> list[tuple[int, dict, dict]]:
    """(time_ns, original record, record for Hive) for each event of a batch."""
    out = []
    for time_ns, record in batch.entries:
        body = dict(render(record, key_style))
        body.setdefault("dateTime", date_time(time_ns, record.get("timezone")))
        out.append((time_ns, record, body))
    return out


class HttpOutputConfig(OutputConfigBase, frozen=True, kw_only=True):
    """Hive's HTTP ingestion: POST {url}/v1/server-recv."""

    type: Literal["http"]
    url: HttpUrl
    compress: Literal["text", "gzip"] = "text"
    timeout: Interval = 30.0
    batch_records: Annotated[int, Meta(ge=1)] = 500
    batch_bytes: Size = 1024 * 1024

    @property
    def renders_hive_spec(self) -> bool:
        return True  # Hive's HTTP ingestion

    default_app_id: str | None = None  # for records without app_id
    key_style: KeyStyle = "snake"
    headers: dict[str, Secret] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        from urllib.parse import urlsplit

        if urlsplit(self.url).username is not None and any(k.lower() == "authorization" for k in self.headers):
            raise ValueError("url credentials and an Authorization header both authorize: give one of them")

    def destination(self) -> str:
        return f"to {redact_url(self.url.rstrip('/'))}/v1/server-recv"


class HttpOutput(Output):
    def __init__(self, cfg: HttpOutputConfig):
        self.name = cfg.name
        self.cfg = cfg
        self.endpoint = cfg.url.rstrip("/") + "/v1/server-recv"
        self.client: HttpClient | None = None
        self.headers = {"Content-Type": "application/json"}
        if cfg.compress == "gzip":
            self.headers["Content-Encoding"] = "gzip"
        for k, v in cfg.headers.items():
            self.headers[k] = v.get_secret_value()

    async def start(self) -> None:
        self.client = HttpClient(timeout=self.cfg.timeout)

    def _requests(self, batches: list[TagBatch]) -> Iterator[tuple[str, list[Any]]]:
        """Group the events by app and cut them by count and bytes: [(app_id, [(tag, time, rec, body, json)])]."""
        groups: dict[str, list] = {}
        for batch in batches:
            for time_ns, record, body in hive_records(batch, self.cfg.key_style):
                app = str(record.get("app_id", self.cfg.default_app_id or ""))
                groups.setdefault(app, []).append((batch.tag, time_ns, record, to_json(body)))
        for app, items in groups.items():
            chunk: list[tuple[str, int, dict[str, Any], bytes]] = []
            size = 0
            for item in items:
                if chunk and (len(chunk) >= self.cfg.batch_records or size + len(item[3]) > self.cfg.batch_bytes):
                    yield app, chunk
                    chunk, size = [], 0
                chunk.append(item)
                size += len(item[3]) + 1
            if chunk:
                yield app, chunk

    async def send(self, batches: list[TagBatch]) -> Outcome:
        dead: list[DeadRecord] = []
        for app, items in self._requests(batches):
            body = b'{"appId":' + orjson.dumps(app) + b',"logBody":[' + b",".join(i[3] for i in items) + b"]}"
            if self.cfg.compress == "gzip":
                body = gzip.compress(body, compresslevel=6)
            try:
                answer = await self._client().post(self.endpoint, body, self.headers)
            except TimeoutError:
                return Outcome.retry(f"POST {self.endpoint}: timed out after {self.cfg.timeout:.0f}s")
            except HttpError as exc:
                return Outcome.retry(f"POST {self.endpoint}: {exc}")
            if answer.redirect:  # never followed: the headers would go along (agent/outputs/posting.py)
                return Outcome.retry(answer.refused_redirect(self.endpoint))
            status = answer.status
            text = answer.excerpt(300)  # one log line
            if 200 <= status < 300:
                continue
            reason = f"HTTP {status} from {self.endpoint}: {text.strip()}"
            if status in RETRY_STATUSES or status >= 500:
                return Outcome.retry(reason)
            if status in PAUSE_STATUSES:
                return Outcome.pause(reason)
            dead.extend((tag, time_ns, record, reason) for tag, time_ns, record, _ in items)
        return Outcome.ok(dead)

    def shrink(self) -> None:
        if self.client is not None:
            self.client.close_idle()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    def _client(self) -> HttpClient:
        if self.client is None:
            raise RuntimeError(f"output {self.name}: send before start")
        return self.client


def build(cfg: HttpOutputConfig, data_dir: Path) -> HttpOutput:
    return HttpOutput(cfg)
