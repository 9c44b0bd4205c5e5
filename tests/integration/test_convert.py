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


LAUGHS = (
    "a: &a ["
    + ",".join(["lol"] * 10)
    + "]\n"
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8))
    + "pipeline: {inputs: [*i]}\n"
)


def include_tree(root: Path, levels: int, fan: int) -> Path:
    """A loop-free tree of includes: level k includes `fan` files of level k + 1 (fan^levels reads)."""
    for level in range(levels, -1, -1):
        body = "".join(f"@include level{level + 1}-{n}.conf\n" for n in range(fan)) if level < levels else ""
        for n in range(fan if level else 1):
            name = f"level{level}-{n}.conf" if level else "td-agent.conf"
            (root / name).write_text("<source>\n  @type forward\n</source>\n" + body)
    return root / "td-agent.conf"


@pytest.mark.parametrize("case", ["billion laughs", "include tree", "long line", "binary", "fifo include"])
def test_a_file_shaped_to_exhaust_the_converter_is_refused_with_exit_2_and_one_line(tmp_path, case):
    import os
    import time

    if case == "billion laughs":  # 10^9 strings once walked
        config = tmp_path / "fluent-bit.yaml"
        config.write_text(LAUGHS)
    elif case == "include tree":  # 16 levels of 3: 3^16 reads
        config = include_tree(tmp_path, 16, 3)
    elif case == "long line":
        config = tmp_path / "td-agent.conf"
        config.write_text("<source>\n  @type forward\n  tag " + "x" * (1 << 20) + "\n</source>\n")
    elif case == "binary":
        config = tmp_path / "td-agent.conf"
        config.write_bytes(b"<source>\n" + os.urandom(4096))
    else:
        os.mkfifo(tmp_path / "pipe.conf")
        config = tmp_path / "td-agent.conf"
        config.write_text("<source>\n  @type forward\n</source>\n@include pipe.conf\n")
    started = time.monotonic()
    run = hive_agent("convert", str(config), cwd=tmp_path)
    assert time.monotonic() - started < 20
    assert run.returncode == 2, run.stderr[-2000:]
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    assert run.stdout == ""
    bound = {
        "billion laughs": "aliases expand past",
        "include tree": "more than 512 files",
        "long line": "longer than",
        "binary": "not UTF-8",
        "fifo include": "not a regular file",
    }[case]
    assert bound in run.stderr, run.stderr
