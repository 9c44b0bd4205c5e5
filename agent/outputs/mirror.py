"""What the AppsFlyer, Wisetracker and Naver outputs share: one purchase, one request, once.

For each purchase of a batch:

* a test purchase is skipped unless ``mirror_test_purchases``; an app with no
  settings for this vendor is skipped (not every game uses every vendor);
* a purchase this vendor already accepted (``delivered`` in the mirror state)
  is skipped: restarts, replays and game servers that send twice never make a
  second vendor event;
* the identifiers the vendor needs come from the record's extra fields or the
  identity map, only those of the purchase's own app and platform; the
  vendor's pure mapping (agent/mirrors/payloads.py) builds the request, or
  refuses the purchase with a reason for the dead-letter store
  (``missing_identifier``, ``unsupported_refund``, ``invalid_time``, …);
* any other exception while reading, mapping or encoding one purchase
  dead-letters that purchase (``invalid``, with the error): one record the
  mapping did not expect never holds the batch behind it;
* requests go out concurrently (``in_flight``), under ``rate_limit``.

Identity records (``identity_match``) reach the output through the same
journal, in order, and are stored in the identity map as they pass.

The outcome for the delivery loop: any PAUSE (credentials refused) pauses
the output; else any RETRY retries the batch, whose accepted purchases are
then skipped as delivered; refused purchases are dead-lettered once the
batch is OK. The one unavoidable repeat: a request in flight when the
process dies, since no vendor lets a sender ask whether it landed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar

import msgspec
import orjson
from msgspec import Meta

from agent.component import DeadRecord, Outcome, Output, SendResult
from agent.config.types import Duration, Endpoint, Interval, MatchPattern, OutputConfigBase, Secret, Size, Strict
from agent.errors import HttpError
from agent.journal.batch import TagBatch, record_of
from agent.mirrors.payloads import Purchase, Refused, game_of, platform_ids, purchase_from
from agent.mirrors.state import open_state
from agent.outputs.http_client import HttpClient
from agent.routing import compile_pattern
from agent.secrets import redact_url

log = logging.getLogger("agent.output.mirror")


class MirrorApp(Strict, frozen=True, kw_only=True):
    """One Hive app_id's settings at a vendor. The token comes from the environment or a file."""

    app_id: str | None = None  # the vendor's app id (AppsFlyer: the package name, or "id" + digits on iOS)
    bundle_id: str | None = None
    service_number: int | None = None  # Wisetracker's _wtno
    token_env: str | None = None
    token_file: Path | None = None
    token: Secret | None = None

    @classmethod
    def prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        """token_env and token_file name where the token is: it is read into ``token`` before validation."""
        sources = [k for k in ("token_env", "token_file", "token") if data.get(k) is not None]
        if len(sources) > 1:
            raise ValueError("give one of token_env, token_file, token")
        if data.get("token_env") is not None:
            return {**data, "token": f"env:{data['token_env']}"}
        if data.get("token_file") is not None:
            return {**data, "token": f"file:{data['token_file']}"}
        return data


class MirrorOutputBase(OutputConfigBase, frozen=True, kw_only=True):
    """What the three vendor mirrors share (agent/outputs/mirror.py)."""

    match: MatchPattern = "ha2union.game.*.purchase_log"
    endpoint: Endpoint
    apps: dict[str, MirrorApp] = msgspec.field(default_factory=dict)  # keyed by the Hive app_id
    in_flight: Annotated[int, Meta(ge=1, le=1024)] = 8
    rate_limit: Annotated[float, Meta(gt=0)] | None = None  # requests per second
    timeout: Interval = 10.0
    mirror_test_purchases: bool = False
    identity_match: MatchPattern = "ha2union.game.*.device_ids"
    delivered_retention: Duration = 30 * 86400.0
    # A batch's requests go out together and the next batch waits for the last answer:
    # bigger batches keep more requests in flight (1 MiB: about 1,500 purchases).
    batch_bytes: Size = 1024 * 1024

    # The vendor authenticates each app's requests with its token (Naver's relay may not).
    token_required: ClassVar[bool] = True

    @classmethod
    def prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        data = super().prepare(data)
        apps = data.get("apps")
        if isinstance(apps, dict):  # each app's token_env or token_file read into its token
            data = {**data, "apps": {k: MirrorApp.prepare(v) if isinstance(v, dict) else v for k, v in apps.items()}}
        return data

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.token_required:
            for hive_app, app in self.apps.items():
                if app.token is None:
                    raise ValueError(f"apps.{hive_app}: token_env, token_file or token is required")

    @property
    def routing_match(self) -> str:
        """What the delivery loop hands this output: the purchases, and the identity records it learns."""
        return f"{self.match} {self.identity_match}"

    def destination(self) -> str:
        apps = len(self.apps)
        return f"to {redact_url(self.endpoint)} for {apps or 'every'} app{'s' if apps != 1 else ''}"


@dataclass(slots=True)
class Request:
    url: str
    headers: dict
    body: bytes
    order: float = 0.0  # lower goes first (AppsFlyer: the earliest deadline)


@dataclass(slots=True)
class Job:
    tag: str
    time_ns: int
    record: Any  # as TagBatch.one_by_one keeps it (agent/journal/batch.py: record_of decodes it)
    purchase: Purchase
    key: str
    request: Request
    after_ok: list = field(default_factory=list)


class RateLimit:
    """At most ``rate`` starts per second, evenly spaced."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self.next = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        start = max(now, self.next)
        self.next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


class MirrorOutput(Output):
    vendor = "mirror"

    def __init__(self, cfg: MirrorOutputBase, data_dir: Path):
        self.cfg = cfg
        self.name = cfg.name
        self.state = open_state(Path(data_dir) / "mirrors.sqlite")
        self.is_identity = compile_pattern(cfg.identity_match)
        self.refund_values = tuple(cfg.refund_values)
        self.limit = RateLimit(cfg.rate_limit)
        self.client: HttpClient | None = None
        # By what they count, the label of hive_agent_mirror_events_total.
        counted = ("requests", "accepted", "duplicates", "test_skipped", "not_configured", "identities", "refused")
        self.counts: collections.Counter[str] = collections.Counter(dict.fromkeys(counted, 0))
        self._purged_at = 0.0
        self._accepted_by_this_batch: set[tuple[str, str]] = set()  # until the batches are done
        # For the ledger: what this process's vendor accepted that the ledger has not counted yet,
        # and when the sends it last counted had finished (agent/ledger/store.py).
        self._accepted_unsettled: set[tuple[str, str]] = set()
        self._settled_ns = 0

    def counters(self) -> collections.Counter[str]:
        return self.counts

    async def start(self) -> None:
        self.client = HttpClient(timeout=self.cfg.timeout, limit=self.cfg.in_flight)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    def shrink(self) -> None:
        self.state.shrink()
        if self.client is not None:
            self.client.close_idle()

    def ledger_settled(self, finished_ns: int) -> None:
        self._settled_ns = finished_ns
        self._accepted_unsettled.clear()

    def _client(self) -> HttpClient:
        if self.client is None:
            raise RuntimeError(f"output {self.name}: send before start")
        return self.client

    # -- what a vendor output provides ---------------------------------------------

    def app_settings(self, p: Purchase) -> Any:
        return self.cfg.apps.get(p.app_id)

    def build(self, p: Purchase, ids: dict, app: Any, now: datetime, job_state: dict) -> Request:
        raise NotImplementedError

    def classify(self, status: int, text: str, job: Job) -> SendResult:
        """2xx OK; 401/403 PAUSE; 408, 429 and 5xx RETRY; other 4xx FATAL."""
        if 200 <= status < 300:
            return SendResult.OK
        if status in (401, 403):
            return SendResult.PAUSE
        if status in (408, 429) or status >= 500:
            return SendResult.RETRY
        return SendResult.FATAL

    def accepted(self, job: Job) -> None:
        """Called once the vendor took ``job`` (after it is marked delivered)."""

    def order(self, jobs: list[Job]) -> list[Job]:
        return jobs

    # -- the shared part -----------------------------------------------------------------

    async def send(self, batches: list[TagBatch]) -> Outcome:
        # The delivery loop sends the same batches again after RETRY or PAUSE: what this call
        # skipped is counted only once the batches are done, and a purchase accepted by an
        # earlier attempt is not a duplicate.
        now = datetime.now(UTC)
        counts: collections.Counter = collections.Counter()
        skipped: list[DeadRecord] = []
        jobs, dead = self._jobs(batches, now, counts, skipped)
        unsent = len(dead)  # refused by the mapping: no request was made for these
        results = await self._run_all(self.order(jobs)) if jobs else []
        pause = next((reason for result, reason, _ in results if result is SendResult.PAUSE), None)
        if pause is not None:
            return Outcome.pause(pause)
        retry = [reason for result, reason, _ in results if result is SendResult.RETRY]
        if retry:
            return Outcome.retry(f"{len(retry)} of {len(results)} requests: {retry[0]}")
        for result, reason, job in results:
            if result is SendResult.FATAL:
                dead.append((job.tag, job.time_ns, record_of(job.record), reason))
        counts["refused"] += len(dead)
        self.counts.update(counts)
        self._accepted_unsettled.update(self._accepted_by_this_batch)
        self._accepted_by_this_batch.clear()
        self._purge()
        return Outcome.ok(dead, unsent, skipped)

    def _jobs(
        self, batches: list[TagBatch], now: datetime, counts: collections.Counter, skipped: list[DeadRecord]
    ) -> tuple[list[Job], list[DeadRecord]]:
        jobs: list[Job] = []
        dead: list[DeadRecord] = []
        seen: set[tuple[str, str]] = set()
        job_state: dict = {}  # what earlier purchases of this call decided (e.g. a first purchase)
        for batch in batches:
            if self.is_identity(batch.tag):
                self._learn(batch, counts)
                continue
            # One record decoded at a time, and of a skipped one (most test purchases) only its
            # bytes kept for the ledger: the batch is not all in memory as objects while it is sent.
            for time_ns, record, kept in batch.one_by_one():
                try:
                    job = self._job(batch.tag, time_ns, record, now, job_state, seen, counts)
                    if isinstance(job, str):
                        skipped.append((batch.tag, time_ns, kept, job))
                        continue
                    if job is not None:
                        job.record = kept
                except Refused as refused:
                    dead.append((batch.tag, time_ns, record, str(refused)))
                    continue
                except (sqlite3.Error, OSError):
                    raise  # the mirror state, not the purchase: the delivery loop retries the batch
                except Exception as exc:  # one purchase's fault, never the batch's
                    dead.append((batch.tag, time_ns, record, f"invalid: {type(exc).__name__}: {exc}"[:500]))
                    continue
                if job is not None:
                    jobs.append(job)
        return jobs, dead

    def _learn(self, batch: TagBatch, counts: collections.Counter) -> None:
        game = game_of(batch.tag)
        for _, record in batch.entries:
            try:
                counts["identities"] += self.state.learn(game, record) if isinstance(record, dict) else 0
            except (TypeError, ValueError, OverflowError) as exc:  # a value SQLite cannot hold
                log.warning("output %s: identity record of %s not learned: %s", self.name, batch.tag, exc)

    def _job(
        self,
        tag: str,
        time_ns: int,
        record: dict,
        now: datetime,
        job_state: dict,
        seen: set,
        counts: collections.Counter,
    ) -> Job | str | None:
        """The request for one purchase; why it is skipped (the ledger's reason); or None when the
        vendor has it already from a send of these records the ledger has not counted. Raises
        Refused (or anything)."""
        p = purchase_from(tag, record, refund_field=self.cfg.refund_field, refund_values=self.refund_values)
        if p.test and not self.cfg.mirror_test_purchases:
            counts["test_skipped"] += 1
            return "hiveiap_purchase_test"
        app = self.app_settings(p)
        if app is None:
            counts["not_configured"] += 1
            return "not_configured"
        key = p.transaction_id + (":refund" if p.refund else "")
        if (p.app_id, key) in seen:
            counts["duplicates"] += 1
            return "duplicate"
        accepted_ns = self.state.delivered_at(self.name, p.app_id, key)
        if accepted_ns is not None:
            if (p.app_id, key) in self._accepted_by_this_batch:
                return None  # an earlier attempt at these batches: delivered by them
            counts["duplicates"] += 1
            if (p.app_id, key) not in self._accepted_unsettled and accepted_ns > self._settled_ns:
                # Accepted after the ledger's last count, by a process that died before the next:
                # delivered by these very records, sent again because the cursor had not moved.
                return None
            return "duplicate"
        seen.add((p.app_id, key))
        ids = {**self.state.lookup(p.game, p.app_id, p.platform, p.did, p.uid), **platform_ids(p.platform, p.ids)}
        request = self.build(p, ids, app, now, job_state)
        return Job(tag, time_ns, record, p, key, request)

    async def _run_all(self, jobs: list[Job]) -> list[tuple[SendResult, str, Job]]:
        """``in_flight`` workers take the jobs in order (cheaper than a task per job behind a semaphore)."""
        results: list = [None] * len(jobs)
        todo = iter(enumerate(jobs))

        async def worker() -> None:
            for i, job in todo:
                results[i] = await self._request(job)

        await asyncio.gather(*(worker() for _ in range(min(self.cfg.in_flight, len(jobs)))))
        return results

    async def _request(self, job: Job) -> tuple[SendResult, str, Job]:
        await self.limit.wait()
        self.counts["requests"] += 1
        req = job.request
        try:
            answer = await self._client().post(req.url, req.body, req.headers)
        except TimeoutError:
            return SendResult.RETRY, f"POST {req.url}: timed out after {self.cfg.timeout:g}s", job
        except HttpError as exc:
            return SendResult.RETRY, f"POST {req.url}: {exc}", job
        if answer.redirect:  # never followed: the token would go along (agent/outputs/posting.py)
            return SendResult.RETRY, answer.refused_redirect(req.url), job
        status = answer.status
        text = "" if 200 <= status < 300 else answer.excerpt(200)
        result = self.classify(status, text, job)
        if result is SendResult.OK:
            self.state.mark_delivered(self.name, job.purchase.app_id, job.key)
            self._accepted_by_this_batch.add((job.purchase.app_id, job.key))
            self.counts["accepted"] += 1
            self.accepted(job)
        return result, f"HTTP {status} from {req.url}: {text}", job

    def _purge(self) -> None:
        if time.monotonic() - self._purged_at > 3600:
            self._purged_at = time.monotonic()
            self.state.purge_delivered(self.cfg.delivered_retention)


def json_request(url: str, headers: dict, body: dict, order: float = 0.0) -> Request:
    return Request(url, {"Content-Type": "application/json", **headers}, orjson.dumps(body), order)
