"""The Prometheus text format the monitor writes, read back by the reference parser."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from agent.monitor import exposition


def test_families_read_back_by_the_reference_parser_with_escaped_labels_and_odd_values():
    events = exposition.counter("hive_agent_x_events", "Events\nwith a \\ line", labels=["component", "reason"])
    events.add_metric(["in", 'a "quoted"\nreason\\'], 5)
    events.add_metric(["out", ""], 2.5)
    age = exposition.gauge("hive_agent_age_seconds", "Age", value=float("inf"))
    nan = exposition.gauge("hive_agent_nan", "Not a number", value=float("nan"))
    text = exposition.render([events, age, nan]).decode()
    assert "# TYPE hive_agent_x_events_total counter" in text
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {tuple(sorted(s.labels.items())): s.value for s in parsed["hive_agent_x_events"].samples}
    assert samples[(("component", "in"), ("reason", 'a "quoted"\nreason\\'))] == 5
    assert samples[(("component", "out"), ("reason", ""))] == 2.5
    assert parsed["hive_agent_x_events"].documentation == "Events\nwith a \\ line"
    assert parsed["hive_agent_age_seconds"].samples[0].value == math.inf
    assert math.isnan(parsed["hive_agent_nan"].samples[0].value)


def test_values_are_written_as_prometheus_client_wrote_them():
    family = exposition.gauge("g", "g", labels=["k"])
    family.add_metric(["a"], 1)
    family.add_metric(["b"], 0.25)
    assert exposition.render([family]).decode().splitlines()[2:] == ['g{k="a"} 1.0', 'g{k="b"} 0.25']


def test_a_sample_with_the_wrong_number_of_labels_is_refused():
    family = exposition.counter("c", "c", labels=["a", "b"])
    try:
        family.add_metric(["only one"], 1)
    except ValueError:
        return
    raise AssertionError("a sample missing a label was taken")
