"""``type = "naver"``: the in-app purchase conversion event, POSTed as JSON to a relay.

Naver publishes no server API, so the output builds the documented event
(``value`` and ``items``, see agent/mirrors/payloads.py) with the purchase's
context, validates it, and POSTs it to ``endpoint`` (a relay or an
attribution partner), with ``Authorization: Bearer <token>`` when the app has
a token. KRW carries value; USD items only; other currencies convert through
``fx_to_krw`` or go with value 0 and are counted as ``unsupported_currency``.
Refunds have no Naver form (dead letter ``unsupported_refund``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from msgspec import Meta, field

from agent.mirrors.payloads import Purchase, Refused, naver_event, naver_items
from agent.outputs.mirror import MirrorApp, MirrorOutput, MirrorOutputBase, Request, json_request


class NaverOutputConfig(MirrorOutputBase, frozen=True, kw_only=True):
    type: Literal["naver"]
    fx_to_krw: dict[str, float] = field(default_factory=dict)
    # Seed 002: "too many conversions reported in a short time are detected as abuse and their
    # reporting may be limited" (no threshold is published). Paced by default: a backlog after an
    # outage goes out at 10 a second (36,000 an hour), not at once; raise it knowingly.
    rate_limit: Annotated[float, Meta(gt=0)] | None = 10.0
    all_apps: bool = True  # without [apps], mirror every app
    token_required: ClassVar[bool] = False  # the relay's own auth, if any: a token is optional


_ANY_APP = MirrorApp()


class NaverOutput(MirrorOutput):
    vendor = "naver"

    def __init__(self, cfg: NaverOutputConfig, data_dir: Path):
        super().__init__(cfg, data_dir)
        self.cfg: NaverOutputConfig = cfg
        self.counts["unsupported_currency"] = 0

    def app_settings(self, p: Purchase) -> Any:
        app = self.cfg.apps.get(p.app_id)
        if app is None and self.cfg.all_apps and not self.cfg.apps:
            return _ANY_APP
        return app

    def build(self, p: Purchase, ids: dict, app: Any, now: datetime, job_state: dict) -> Request:
        if p.refund:
            raise Refused("unsupported_refund", "Naver has no refund event")
        event, unsupported = naver_event(naver_items(p), p.currency, self.cfg.fx_to_krw)
        if unsupported:
            self.counts["unsupported_currency"] += 1
        body = {
            **event,
            "app_id": app.app_id or p.app_id,
            "transaction_id": p.transaction_id,
            "event_time": p.time_utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "platform": p.platform,
            "currency": p.currency,
            **{k: v for k, v in ids.items() if k in ("advertising_id", "idfa", "idfv")},
        }
        headers = {"Authorization": f"Bearer {app.token.get_secret_value()}"} if app.token else {}
        return json_request(self.cfg.endpoint, headers, body)


def build(cfg: NaverOutputConfig, data_dir: Path) -> NaverOutput:
    return NaverOutput(cfg, data_dir)
