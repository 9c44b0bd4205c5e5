"""hive-agent convert: td-agent and Fluent Bit configs as this agent's TOML, which check accepts;
everything not translated is listed with its line, and the exit code says so."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPATIBILITY = (ROOT / "docs" / "compatibility.md").read_text()
# The stanzas the docs give for pointing Fluent Bit and Fluentd at the agent, as they are.
FLUENTBIT_OUTPUT = re.search(r"```ini\n(\[OUTPUT\].*?)```", COMPATIBILITY, re.S).group(1)
FLUENTD_MATCH = re.search(r"```\n(<match .*?</match>\n)```", COMPATIBILITY, re.S).group(1)


def hive_agent(*args, cwd, env_extra=None):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )


def converted(tmp_path, config: Path, env_extra=None):
    run = hive_agent("convert", str(config), "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert run.returncode in (0, 1), run.stderr
    out = tmp_path / "converted.toml"
    out.write_text(run.stdout)
    check = hive_agent("check", "-c", str(out), cwd=tmp_path, env_extra=env_extra)
    assert check.returncode == 0, run.stdout + check.stderr
    return run, tomllib.loads(run.stdout)


def test_a_td_agent_config_with_includes(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "td-agent.conf").write_text(
        "<system>\n  log_level info\n</system>\n\n@include conf.d/*.conf\n\n"
        + FLUENTD_MATCH
        + "\n<match fluent.**>\n  @type null\n</match>\n"
    )
    (tmp_path / "conf.d" / "purchase.conf").write_text("""\
<source>
  @type tail
  @id purchase_tail
  path /var/log/game/purchase*.json
  pos_file /var/log/td-agent/purchase.pos
  tag ha2union.game.sample.purchase_log
  read_from_head true
  <parse>
    @type json
  </parse>
</source>

<source>
  @type forward
  port 24225   # game servers on the host
  bind 127.0.0.1
  <security>
    self_hostname agent-1
    shared_key "#{ENV['FWD_KEY']}"
  </security>
</source>

<filter ha2union.game.**>
  @type record_transformer
  <record>
    region kr
    host "#{Socket.gethostname}"
  </record>
</filter>

<match ha2union.game.*.purchase_log>
  @type copy
  <store>
    @type forward
    require_ack_response true
    <server>
      host collector-1.hive.internal
      port 24224
    </server>
    <server>
      host collector-2.hive.internal
      standby true
    </server>
    <buffer>
      @type file
      path /var/log/td-agent/buffer/hive
      retry_wait 1s
      retry_max_interval 60s
    </buffer>
  </store>
  <store>
    @type s3
    s3_bucket purchases
  </store>
</match>
""")
    run, doc = converted(
        tmp_path, tmp_path / "td-agent.conf", env_extra={"FWD_KEY": "k", "HIVE_FORWARD_SHARED_KEY": "k2"}
    )
    assert run.returncode == 1
    tail, forward = doc["inputs"]
    assert tail["import_pos_file"] == "/var/log/td-agent/purchase.pos" and tail["read_from_head"] is True
    assert forward["shared_key"] == "env:FWD_KEY" and forward["port"] == 24225
    assert doc["filters"] == [
        {
            "type": "record_transformer",
            "name": "record_transformer.0",
            "match": "ha2union.game.**",
            "record": {"region": "kr"},
        }
    ]
    store, docs_out = doc["outputs"]  # the include comes first
    assert docs_out["require_ack_response"] is True and docs_out["shared_key"] == "env:HIVE_FORWARD_SHARED_KEY"
    assert store["servers"] == [
        {"host": "collector-1.hive.internal", "port": 24224},
        {"host": "collector-2.hive.internal", "standby": True},
    ]
    assert store["retry_wait"] == "1s" and store["match"] == "ha2union.game.*.purchase_log"
    left = run.stderr
    assert "td-agent.conf:1: <system>" in left
    assert "purchase.conf:27: <record> host: a value computed per record" in left
    assert "@type s3" in left and "@type null" in left
    assert "# Left out (not translated):" in run.stdout


FLUENTBIT_CLASSIC = """\
[SERVICE]
    Flush     5
    Log_Level info

@SET region=kr

[INPUT]
    Name            tail
    Path            /var/log/game/purchase*.json
    Tag             ha2union.game.sample.purchase_log
    DB              /var/lib/fluent-bit/tail.db
    Parser          json
    Read_from_Head  On

[FILTER]
    Name        record_modifier
    Match       ha2union.*
    Record      region ${region}
    Record      env prod
    Remove_key  debug

[OUTPUT]
    Name  es
    Match *
"""


def test_a_fluent_bit_classic_config(tmp_path):
    (tmp_path / "fluent-bit.conf").write_text(FLUENTBIT_CLASSIC + "\n" + FLUENTBIT_OUTPUT)
    run, doc = converted(tmp_path, tmp_path / "fluent-bit.conf", env_extra={"HIVE_FORWARD_SHARED_KEY": "k"})
    assert run.returncode == 1 and "[OUTPUT] es" in run.stderr and "[SERVICE]" in run.stderr
    [tail] = doc["inputs"]
    assert tail["import_fluentbit_db"] == "/var/lib/fluent-bit/tail.db"
    [modifier] = doc["filters"]
    assert modifier["record"] == {"region": "kr", "env": "prod"} and modifier["remove_keys"] == ["debug"]
    assert modifier["match"] == "ha2union.**"  # Fluent Bit's * crosses dots: Fluentd's **
    [forward] = doc["outputs"]
    assert forward["servers"] == [{"host": "hive-agent.internal", "port": 24224}]
    assert forward["shared_key"] == "env:HIVE_FORWARD_SHARED_KEY" and forward["self_hostname"] == "game-server-01"


def test_a_fluent_bit_yaml_config_with_only_supported_parts_converts_whole(tmp_path):
    (tmp_path / "fluent-bit.yaml").write_text("""\
pipeline:
  inputs:
    - name: forward
      listen: 127.0.0.1
      port: 24226
  outputs:
    - name: forward
      match: "ha2union.*"
      host: collector-1.hive.internal
      port: 24224
      require_ack_response: true
    - name: stdout
      match: "*"
""")
    run, doc = converted(tmp_path, tmp_path / "fluent-bit.yaml")
    assert run.returncode == 0 and run.stderr == ""
    assert doc["inputs"] == [{"type": "forward", "name": "forward.0", "bind": "127.0.0.1", "port": 24226}]
    assert [o["type"] for o in doc["outputs"]] == ["forward", "stdout"]
    assert doc["outputs"][0]["require_ack_response"] is True


@pytest.mark.parametrize("text", ["just words\n", "<source>\n  @type forward\n"])
def test_what_is_no_config_is_exit_2_with_one_line(tmp_path, text):
    (tmp_path / "x.conf").write_text(text)
    run = hive_agent("convert", str(tmp_path / "x.conf"), cwd=tmp_path)
    assert run.returncode == 2 and run.stdout == "" and len(run.stderr.strip().splitlines()) == 1
