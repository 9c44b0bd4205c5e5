"""conf/monitoring: every metric the alert rules and the dashboard name exists on a running agent's
/metrics, with the labels they use."""

import json
import re
from pathlib import Path

import yaml

from tests.agentproc import MONITOR, Agent, file_output, forward_input, free_port, get_json, wait_until
from tests.integration.test_forward_output import HIVE_FILTER
from tests.unit.test_hive_purchase_log import COMPLETE
from tests.wire import ForwardClient, event_time

MONITORING = Path(__file__).resolve().parents[2] / "conf" / "monitoring"
METRIC = re.compile(r"\b(hive_agent_[a-z_]+)\b(\{[^}]*\})?")
GROUPING = re.compile(r"\bby \(([^)]*)\)")
ADDED_BY_PROMETHEUS = {"instance", "job"}


def expressions() -> list[tuple[str, set[str]]]:
    """(expression, labels it names) from the alert rules and the dashboard's queries."""
    found = []
    for group in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            text = json.dumps(rule.get("annotations", {}))
            named = set(re.findall(r"\$labels\.(\w+)", text))
            found.append((rule["expr"], named))
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found.append((target["expr"], set(re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")))))
    return found


def labels_on(text: str, metric: str) -> set[str] | None:
    """The label names one sample of ``metric`` carries, or None when there is none."""
    for line in text.splitlines():
        if line.startswith(metric + "{") or line.startswith(metric + " "):
            return set(re.findall(r"(\w+)=\"", line.split(" ")[0]))
    return None


def test_every_metric_and_label_the_rules_and_dashboard_use_exists(tmp_path):
    naver = f'[[outputs]]\ntype = "naver"\nname = "naver"\nendpoint = "http://127.0.0.1:{free_port()}"\n'
    cfg = MONITOR + forward_input() + HIVE_FILTER + file_output() + naver
    with Agent(tmp_path, cfg) as agent:
        client = ForwardClient(agent.port)
        bad = dict(COMPLETE, transaction_id="X-1", currency="dollars")  # an invalid field: the counter appears
        client.send_chunk("ha2union.game.g.purchase_log", [[event_time(1_700_000_000), bad]], "c1")
        client.close()
        text = wait_until(
            lambda: (
                (t := get_json(agent.monitor_port, "/metrics")[1])
                and "hive_agent_mirror_events_total" in t
                and "hive_agent_ledger_purchases_total{" in t  # once the purchase is counted in
                and t
            )
        )
        assert agent.stop() == 0
    checked = 0
    for expr, named in expressions():
        grouped = {label.strip() for m in GROUPING.finditer(expr) for label in m.group(1).split(",")}
        for metric, selector in METRIC.findall(expr):
            on = labels_on(text, metric)
            assert on is not None, f"{metric} (in {expr!r}) is not on /metrics"
            selected = set(re.findall(r"(\w+)\s*=", selector or ""))
            wanted = (selected | grouped | (named if not grouped else set())) - ADDED_BY_PROMETHEUS
            assert wanted <= on | {"__name__"}, f"{metric} has {sorted(on)}, {expr!r} uses {sorted(wanted)}"
            checked += 1
    assert checked >= 15
