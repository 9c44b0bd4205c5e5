"""Command line: ``hive-agent run | check | version`` (and the internal ``deliver``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from agent import __version__
from agent.errors import ConfigError

DEFAULT_CONFIG = "conf/agent.toml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hive-agent", description="Fluentd-compatible purchase log agent")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the agent")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    check = sub.add_parser("check", help="validate a config and print what would run")
    check.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    sub.add_parser("version", help="print the version")
    deliver = sub.add_parser("deliver", help=argparse.SUPPRESS)  # the delivery process (started by run)
    deliver.add_argument("-c", "--config", required=True)
    deliver.add_argument("--ready-fd", type=int, default=None)
    return p


def _load(path: str):
    from agent.config import load_config
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"hive-agent: config error:\n{exc}", file=sys.stderr)
        raise SystemExit(2)


def _event_loop_runner():
    try:
        import uvloop
        return uvloop.run
    except ImportError:
        return asyncio.run


def cmd_check(path: str) -> int:
    cfg = _load(path)
    a = cfg.agent
    j = a.journal
    print(f"config {path}: OK")
    print(f"data_dir {a.data_dir}  journal: fsync={j.fsync} segment_bytes={j.segment_bytes} max_bytes={j.max_bytes}")
    for i in cfg.inputs:
        extra = []
        if i.shared_key:
            extra.append("shared_key")
        if i.tls_cert:
            extra.append("tls")
        if i.unix_path:
            extra.append(f"unix {i.unix_path}")
        print(f"input  {i.name}: {i.type} {i.bind}:{i.port}" + (f" ({', '.join(extra)})" if extra else ""))
    for f in cfg.filters:
        print(f"filter {f.name}: {f.type} match {f.match!r}")
    for o in cfg.outputs:
        where = f" path {o.path}" if o.type == "file" else ""
        if o.type == "forward":
            where = " to " + ", ".join(f"{s.host}:{s.port}" for s in o.servers)
        print(f"output {o.name}: {o.type} match {o.match!r}{where}")
    return 0


def cmd_run(path: str) -> int:
    from agent.app import App
    from agent.log import setup_logging
    cfg = _load(path)
    setup_logging(cfg.agent.log_level, cfg.agent.log_format, "main")
    return _event_loop_runner()(App(cfg, Path(path)).run())


def cmd_deliver(path: str, ready_fd: int | None) -> int:
    from agent.log import setup_logging
    from agent.worker import run_delivery
    cfg = _load(path)
    setup_logging(cfg.agent.log_level, cfg.agent.log_format, "delivery")
    return _event_loop_runner()(run_delivery(cfg, ready_fd))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"hive-agent {__version__}")
        return 0
    if args.command == "check":
        return cmd_check(args.config)
    if args.command == "run":
        return cmd_run(args.config)
    if args.command == "deliver":
        return cmd_deliver(args.config, args.ready_fd)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
