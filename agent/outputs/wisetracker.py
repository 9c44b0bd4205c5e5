"""``type = "wisetracker"``: S2S purchases, ``POST {endpoint}`` with header ``authToken``.

The body is ``SESSION`` + ``REVENUE`` (w_purchase, or w_first_purchase when
``first_purchase`` is on and this agent has not seen the user buy before).
Answers: 2xx OK; timeouts, 429 and 5xx RETRY; 401/403 PAUSE; other 4xx FATAL.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from agent.config.types import Endpoint
from agent.mirrors.payloads import Purchase, wisetracker_body
from agent.outputs.mirror import Job, MirrorOutput, MirrorOutputBase, Request, json_request


class WisetrackerOutputConfig(MirrorOutputBase, frozen=True, kw_only=True):
    type: Literal["wisetracker"]
    endpoint: Endpoint = "https://trk.analytics.wisetracker.co.kr/s2s/v1/s2sDataRcv.do"
    first_purchase: bool = False  # w_first_purchase when this agent has not seen the user buy before

    def __post_init__(self) -> None:
        super().__post_init__()
        for hive_app, app in self.apps.items():
            if app.service_number is None:
                raise ValueError(f"apps.{hive_app}: service_number (_wtno) is required")


class WisetrackerOutput(MirrorOutput):
    vendor = "wisetracker"

    def __init__(self, cfg: WisetrackerOutputConfig, data_dir: Path):
        super().__init__(cfg, data_dir)
        self.cfg: WisetrackerOutputConfig = cfg

    def build(self, p: Purchase, ids: dict, app: Any, now: datetime, job_state: dict) -> Request:
        first = False
        if self.cfg.first_purchase and p.uid is not None:
            buyers = job_state.setdefault("buyers", set())
            first = (p.app_id, p.uid) not in buyers and not self.state.has_bought(self.name, p.app_id, p.uid)
            buyers.add((p.app_id, p.uid))
        body = wisetracker_body(
            p, ids, service_number=app.service_number, send_ms=int(now.timestamp() * 1000), first=first
        )
        return json_request(self.cfg.endpoint, {"authToken": app.token.get_secret_value()}, body)

    def accepted(self, job: Job) -> None:
        if self.cfg.first_purchase and job.purchase.uid is not None:
            self.state.mark_buyer(self.name, job.purchase.app_id, job.purchase.uid)


def build(cfg: WisetrackerOutputConfig, data_dir: Path) -> WisetrackerOutput:
    return WisetrackerOutput(cfg, data_dir)
