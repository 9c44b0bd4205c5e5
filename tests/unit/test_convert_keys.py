"""The convert key tables against the config models: every key a table produces is an option of
its component, and every section a translation produces validates as the agent would take it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.types import OutputConfigBase, field_names
from agent.convert import fluentbit, fluentd, keys
from agent.convert.translate_fluentbit import from_fluentbit
from agent.convert.translate_fluentd import from_fluentd
from agent.registry import FILTERS, INPUTS, OUTPUTS

MODELS = {
    **{f"input:{n}": r.config for n, r in INPUTS.items()},
    **{n: r.config for n, r in {**FILTERS, **OUTPUTS}.items()},
}


def model_of(table: keys.KeyTable) -> type:
    if table.type == "*":
        return OutputConfigBase
    return {"input": INPUTS, "filter": FILTERS, "output": OUTPUTS}[table.kind][table.type].config


@pytest.mark.parametrize("table", keys.TABLES, ids=lambda t: f"{t.kind}-{t.type}-{len(t.keys)}")
def test_every_key_a_table_writes_is_an_option_of_its_component(table):
    fields = field_names(model_of(table))
    assert {ours for ours, _ in table.keys.values()} <= set(fields)


FLUENTD = """\
<source>
  @type forward
  @id in_fwd
  port 24224
  bind 0.0.0.0
  source_address_key client_ip
  <security>
    shared_key "#{ENV['FORWARD_KEY']}"
    self_hostname agg
  </security>
</source>
<source>
  @type tail
  path /var/log/game/*.json
  exclude_path ["/var/log/game/skip.json"]
  pos_file /var/log/td-agent/game.pos
  tag game.*
  read_from_head true
  follow_inodes true
  rotate_wait 5
  refresh_interval 30s
  path_key file
  <parse>
    @type json
  </parse>
</source>
<filter game.**>
  @type record_transformer
  remove_keys debug,trace
  <record>
    region kr
  </record>
</filter>
<match game.**>
  @type copy
  <store>
    @type forward
    require_ack_response true
    ack_response_timeout 30s
    heartbeat_type transport
    compress gzip
    <server>
      host 10.0.0.1
      port 24224
    </server>
    <security>
      shared_key secret
      self_hostname edge
    </security>
    <buffer>
      @type file
      path /var/log/td-agent/buffer
      retry_wait 2s
      retry_max_interval 30s
      retry_forever true
    </buffer>
  </store>
  <store>
    @type http
    endpoint http://hive.example:8080/v1/server-recv
  </store>
  <store>
    @type file
    path /var/log/td-agent/out
  </store>
  <store>
    @type stdout
  </store>
</match>
"""

FLUENTBIT = """\
[INPUT]
    Name    forward
    Listen  0.0.0.0
    Port    24224
    Shared_Key ${FORWARD_KEY}
[INPUT]
    Name    tail
    Path    /var/log/game/*.json
    Exclude_Path /var/log/game/skip.json
    Tag     game.*
    DB      /var/lib/fluent-bit/tail.db
    Read_from_Head On
    Rotate_Wait 5
    Path_Key file
    Parser  json
[FILTER]
    Name    modify
    Match   game.*
    Add     region kr
    Remove  debug
[OUTPUT]
    Name    forward
    Match   game.*
    Host    10.0.0.1
    Port    24224
    Require_ack_response True
    Compress gzip
    Retry_Limit False
[OUTPUT]
    Name    http
    Match   game.*
    Host    hive.example
    Port    8080
    URI     /v1/server-recv
    Header  X-Token ${TOKEN}
    Header  X-Game sample
[OUTPUT]
    Name    file
    Match   *
    Path    /var/log/out
[OUTPUT]
    Name    stdout
    Match   *
"""


def sections_of(translation) -> list[tuple[str, dict]]:
    return [
        *((f"input:{c['type']}", c) for c in translation.inputs),
        *((c["type"], c) for c in translation.filters + translation.outputs),
    ]


@pytest.mark.parametrize("peer", ["fluentd", "fluent-bit"])
def test_every_section_a_translation_produces_validates_against_its_model(peer, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FORWARD_KEY", "a-forward-key")
    monkeypatch.setenv("TOKEN", "a-token")
    path = tmp_path / ("td-agent.conf" if peer == "fluentd" else "fluent-bit.conf")
    path.write_text(FLUENTD if peer == "fluentd" else FLUENTBIT)
    t = from_fluentd(fluentd.read(path)) if peer == "fluentd" else from_fluentbit(fluentbit.read(path))
    produced = sections_of(t)
    assert sorted(kind for kind, _ in produced) == sorted(
        ["input:forward", "input:tail", "record_transformer", "forward", "http", "file", "stdout"]
    )
    for kind, section in produced:
        MODELS[kind].validate(section)  # raises on an option the model does not have
    assert [item for item in t.left_out if "no equivalent" in item.why] == []
