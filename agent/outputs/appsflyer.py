"""``type = "appsflyer"``: S2S in-app events, ``POST {endpoint}/inappevent/{app_id}``.

One ``af_purchase`` per request, header ``authentication`` (an S2S token on
api3, a dev key on the legacy api2). With a backlog the earliest deadline
goes first: AppsFlyer keeps an event's time only if it arrives before 02:00
UTC on the day after its UTC date; later ones are sent and counted as late.
Events older than ``max_event_age`` are not sent (dead letter ``too_old``).

Answers: 200 OK; timeouts, 429 and 5xx RETRY (a 5xx at most
``server_errors_before_dead_letter`` times for one event, then FATAL);
401, 403 and the 400 "Failed to Authenticate" PAUSE; other 400s FATAL.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from msgspec import Meta

from agent.component import SendResult
from agent.config.types import Duration, Endpoint
from agent.mirrors.payloads import Purchase, Refused, appsflyer_cutoff, appsflyer_event, appsflyer_keeps_time
from agent.outputs.mirror import Job, MirrorOutput, MirrorOutputBase, Request, json_request

AUTH_FAILURES = ("authenticat", "token", "app_id")  # 400 bodies that mean our credentials, not the event


class AppsFlyerOutputConfig(MirrorOutputBase, frozen=True, kw_only=True):
    type: Literal["appsflyer"]
    endpoint: Endpoint = "https://api3.appsflyer.com"
    rate_limit: Annotated[float, Meta(gt=0)] | None = 900.0  # AppsFlyer: stay under 1,000 requests per second
    max_event_age: Duration = 7 * 86400.0
    server_errors_before_dead_letter: Annotated[int, Meta(ge=1)] = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        for hive_app, app in self.apps.items():
            if not app.app_id:
                raise ValueError(f"apps.{hive_app}: app_id (the AppsFlyer app id) is required")
            ios = ".ios." in hive_app or hive_app.endswith(".ios") or ".apple." in hive_app
            if ios and not re.fullmatch(r"id\d+", app.app_id):
                raise ValueError(
                    f"apps.{hive_app}: iOS app_id {app.app_id!r} must be 'id' + digits "
                    f"(AppsFlyer answers 200 and drops the event otherwise)"
                )


class AppsFlyerOutput(MirrorOutput):
    vendor = "appsflyer"

    def __init__(self, cfg: AppsFlyerOutputConfig, data_dir: Path):
        super().__init__(cfg, data_dir)
        self.cfg: AppsFlyerOutputConfig = cfg
        self.counts["late"] = 0
        self._server_errors: dict[tuple[str, str], int] = {}

    def build(self, p: Purchase, ids: dict, app: Any, now: datetime, job_state: dict) -> Request:
        if now - p.time_utc > timedelta(seconds=self.cfg.max_event_age):
            raise Refused("too_old", f"purchase time {p.time_utc:%Y-%m-%d %H:%M:%S} UTC is older than max_event_age")
        if p.platform == "I" and not app.app_id.startswith("id"):
            # AppsFlyer would answer 200 and drop it; the config check catches iOS apps by their Hive app_id.
            raise Refused("invalid", f"iOS purchase for AppsFlyer app_id {app.app_id!r}, which lacks the 'id' prefix")
        body = appsflyer_event(p, ids, bundle_id=app.bundle_id)
        return json_request(
            f"{self.cfg.endpoint}/inappevent/{app.app_id}",
            {"authentication": app.token.get_secret_value()},
            body,
            order=appsflyer_cutoff(p.time_utc).timestamp(),
        )

    def order(self, jobs: list[Job]) -> list[Job]:
        return sorted(jobs, key=lambda job: job.request.order)

    def classify(self, status: int, text: str, job: Job) -> SendResult:
        if status == 400 and any(word in text.lower() for word in AUTH_FAILURES):
            return SendResult.PAUSE
        result = super().classify(status, text, job)
        key = (job.purchase.app_id, job.key)
        if result is SendResult.RETRY and status >= 500:
            self._server_errors[key] = self._server_errors.get(key, 0) + 1
            if self._server_errors[key] >= self.cfg.server_errors_before_dead_letter:
                del self._server_errors[key]
                return SendResult.FATAL
        else:
            self._server_errors.pop(key, None)
        return result

    def accepted(self, job: Job) -> None:
        if not appsflyer_keeps_time(job.purchase.time_utc, datetime.now(UTC)):
            self.counts["late"] += 1  # AppsFlyer stamps it with its arrival time


def build(cfg: AppsFlyerOutputConfig, data_dir: Path) -> AppsFlyerOutput:
    return AppsFlyerOutput(cfg, data_dir)
