"""The image's config and the Kubernetes sidecar manifest agree with the agent's own config."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from agent.config.document import load_config_text
from agent.config.types import parse_size

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = ROOT / "conf/container.toml"


def test_the_image_config_is_the_default_with_only_its_three_changes():
    default = tomllib.loads((ROOT / "conf/agent.toml").read_text())
    container = tomllib.loads(CONTAINER.read_text())
    assert container["agent"].pop("data_dir") == "/var/lib/hive-agent"
    assert default["agent"].pop("data_dir") == "var"
    assert container["agent"].pop("shutdown_timeout") == "8s"  # inside `docker stop`'s 10 s
    default["agent"].pop("shutdown_timeout")
    assert container["monitor"].pop("bind") == "0.0.0.0"
    default["monitor"].pop("bind")
    assert container["outputs"][0].pop("path") == "/var/lib/hive-agent/out/events.jsonl"
    default["outputs"][0].pop("path")
    assert container == default


def test_the_sidecar_manifest_matches_the_image_config(tmp_path):
    text = CONTAINER.read_text()
    data_dir = Path(tomllib.loads(text)["agent"]["data_dir"])
    # Validated as the agent would, with a data_dir this test may write (the image's is root's /var/lib).
    cfg = load_config_text(text.replace(f'"{data_dir}"', f'"{tmp_path}"', 1), CONTAINER)
    [statefulset] = yaml.safe_load_all((ROOT / "deploy/kubernetes/sidecar.yaml").read_text())
    pod = statefulset["spec"]["template"]["spec"]
    [agent] = [c for c in pod["containers"] if c["name"] == "hive-agent"]
    ports = {p["name"]: (p["containerPort"], p["protocol"]) for p in agent["ports"]}
    [forward] = cfg.inputs
    assert ports["forward"] == (forward.port, "TCP") and ports["heartbeat"] == (forward.port, "UDP")
    assert cfg.monitor is not None and ports["monitor"] == (cfg.monitor.port, "TCP")
    assert cfg.monitor.bind == "0.0.0.0"  # the kubelet probes the pod's address, not its loopback
    for probe in ("readinessProbe", "livenessProbe"):
        assert agent[probe]["httpGet"] == {"path": "/health", "port": "monitor"}
    [mount] = agent["volumeMounts"]
    assert Path(mount["mountPath"]) == data_dir
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == mount["name"]
    assert (
        parse_size(claim["spec"]["resources"]["requests"]["storage"].replace("Gi", "GiB")) > cfg.agent.journal.max_bytes
    )
    # The drain fits in the grace: the agent exits 0 before the kubelet's SIGKILL.
    assert pod["terminationGracePeriodSeconds"] > cfg.agent.shutdown_timeout + 2
    security = agent["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"], pod["securityContext"]["fsGroup"]) == (10001,) * 3
    assert security["readOnlyRootFilesystem"] is True
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 10001:10001" in dockerfile and "COPY conf/container.toml /etc/hive-agent/agent.toml" in dockerfile
    assert "VOLUME" not in dockerfile.replace("# Nothing is declared as a VOLUME", "")
