"""Command line: ``hive-agent run | check | init | deadletter | version`` (and the internal ``deliver``).

Without ``-c``, a command uses /etc/hive-agent/agent.toml when it exists, else
the default shipped in the package (agent/defaults), with its data under the
user's state directory.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.config.document import AgentConfig

import argparse
import asyncio
import os
import sys
from pathlib import Path

from agent import __version__, secrets
from agent.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hive-agent", description="Fluentd-compatible purchase log agent")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the agent")
    run.add_argument("-c", "--config", default=None)
    check = sub.add_parser("check", help="validate a config and print what would run")
    check.add_argument("-c", "--config", default=None)
    sub.add_parser("version", help="print the version")
    status = sub.add_parser("status", help="the running agent at a glance; exit 0 when healthy")
    status.add_argument("-c", "--config", default=None)
    status.add_argument("--json", action="store_true", help="for machines")
    status.add_argument("--interval", type=float, default=1.0, help="seconds between the two reads for rates")
    reload = sub.add_parser("reload", help="make the running agent read its config file again; exit 0 when applied")
    reload.add_argument("-c", "--config", default=None, help="the config the agent runs (it finds the agent)")
    tap = sub.add_parser("tap", help="the events flowing through the agent now, after the filters, as JSON lines")
    tap.add_argument("-c", "--config", default=None)
    tap.add_argument("--match", default="**", help="a tag pattern, as in match (default: every tag)")
    convert = sub.add_parser("convert", help="print a Fluentd or Fluent Bit config as this agent's TOML")
    convert.add_argument("file")
    convert.add_argument("--data-dir", default="/var/lib/hive-agent", help="the converted config's data_dir")
    init = sub.add_parser("init", help="write a commented config to start from")
    init.add_argument("path", nargs="?", default="agent.toml")
    init.add_argument(
        "--data-dir", default=None, help="its data_dir (default: /var/lib/hive-agent as root, else yours)"
    )
    init.add_argument("--force", action="store_true", help="replace the file if it exists")
    dead = sub.add_parser("deadletter", help="the dead-letter store: list, replay")
    dead_sub = dead.add_subparsers(dest="deadletter_command", required=True)
    dl_list = dead_sub.add_parser("list", help="counts by output and reason, with a few samples")
    dl_list.add_argument("-c", "--config", default=None)
    dl_replay = dead_sub.add_parser("replay", help="re-queue dead letters once the cause is fixed")
    dl_replay.add_argument("-c", "--config", default=None)
    dl_replay.add_argument("--output", required=True, help="the output (or filter) whose dead letters to replay")
    dl_replay.add_argument("--reason", default=None, help="only those whose reason contains this text")
    ledger = sub.add_parser("ledger", help="purchases by day, game and output: in, delivered, refused, pending")
    ledger.add_argument("-c", "--config", default=None)
    ledger.add_argument("--day", default=None, help="YYYY-MM-DD, in the ledger's timezone")
    ledger.add_argument("--game", default=None)
    ledger.add_argument("--output", default=None)
    ledger.add_argument("--json", action="store_true", help="a list of rows, for machines")
    deliver = sub.add_parser("deliver", help=argparse.SUPPRESS)  # the delivery process (started by run)
    deliver.add_argument("-c", "--config", required=True)
    deliver.add_argument("--ready-fd", type=int, default=None)
    deliver.add_argument("--control-fd", type=int, default=None)
    deliver.add_argument("--config-on-stdin", action="store_true")
    deliver.add_argument("--group", type=int, default=0)
    return p


def _config_path(given: str | None) -> str:
    if given is not None:
        return given
    from agent.defaults import default_config

    return str(default_config())


def _load(path: str, text: str | None = None) -> AgentConfig:
    """The config at ``path`` (or ``text``, read from it), or exit 2 with every error."""
    from agent.config.document import load_config, load_config_text

    try:
        return load_config(path) if text is None else load_config_text(text, path)
    except ConfigError as exc:
        print(f"hive-agent: config error:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _read(path: str) -> str:
    from agent.config.document import read_config_text

    try:
        return read_config_text(path)
    except ConfigError as exc:
        print(f"hive-agent: config error:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def event_loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
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
    for kind, items in (("input ", cfg.inputs), ("filter", cfg.filters), ("output", cfg.outputs)):
        for item in items:
            print(f"{kind} {item.name}: {item.describe()}")
    from agent import datadir

    untrusted = datadir.problems(a.data_dir)
    for problem in untrusted:
        print(f"hive-agent: data_dir would be refused: {problem}", file=sys.stderr)
    return 1 if untrusted else 0


def cmd_status(path: str, as_json: bool, interval: float) -> int:
    import orjson

    from agent.monitor import client as status

    cfg = _load(path)
    secrets.install(cfg)
    try:
        report = status.collect(cfg, interval)
    except status.Unreachable as exc:
        print(f"hive-agent: {exc}", file=sys.stderr)
        return 2
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if as_json else status.render(report))
    return 0 if report["healthy"] else 1


def cmd_reload(path: str) -> int:
    """Exit 0 applied (or signalled, without a monitor), 1 refused or partly applied, 2 cannot ask."""
    import tomllib

    from agent.config.document import load_config, read_config_text
    from agent.monitor import client

    # The agent judges the file; this only needs to find the agent, even when the file is now wrong.
    try:
        cfg = load_config(path)
        data_dir, has_monitor = cfg.agent.data_dir, cfg.monitor is not None
    except ConfigError:
        try:
            raw = tomllib.loads(read_config_text(path))
        except (ConfigError, tomllib.TOMLDecodeError) as exc:
            print(f"hive-agent: cannot find the agent from {path}: {exc}", file=sys.stderr)
            return 1
        agent = raw.get("agent")
        if not isinstance(agent, dict):
            agent = {}
        data_dir, has_monitor = Path(str(agent.get("data_dir", "var"))), "monitor" in raw
    try:
        code, answer = client.reload(data_dir, has_monitor)
    except client.Unreachable as exc:
        print(f"hive-agent: {exc}", file=sys.stderr)
        return 2
    result = answer.get("result", "error")
    if result == "signalled":
        print(f"hive-agent: SIGHUP sent to {answer['pid']} (no [monitor]: the result is in its log)")
        return 0
    if result == "ok":
        said = ", ".join(f"{len(answer[k])} {k}" for k in ("added", "removed", "changed", "kept"))
        print(f"hive-agent: reloaded: {said}")
        for k in ("added", "removed", "changed"):
            for name in answer[k]:
                print(f"  {k:<8} {name}")
        return 0
    print(f"hive-agent: reload {result} (HTTP {code}):", file=sys.stderr)
    for error in answer.get("errors", []):
        print(f"  {error}", file=sys.stderr)
    return 1


def cmd_tap(path: str, match: str) -> int:
    from agent.monitor import client as status

    cfg = _load(path)
    try:
        status.tap(cfg, match, sys.stdout.buffer)
    except status.Unreachable as exc:
        print(f"hive-agent: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def cmd_convert(path: str, data_dir: str) -> int:
    """0: everything translated; 1: something was left out (listed on stderr); 2: unreadable."""
    from agent.convert.model import ConvertError
    from agent.convert.run import convert

    try:
        text, translation = convert(Path(path), data_dir)
    except ConvertError as exc:
        print(f"hive-agent: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, RecursionError) as exc:  # a file shaped like no config: one line
        print(f"hive-agent: {path}: not a config that can be converted: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(text, end="")
    for item in translation.left_out:
        print(f"left out: {item}", file=sys.stderr)
    return 1 if translation.left_out else 0


def cmd_init(path: str, data_dir: str | None, force: bool) -> int:
    from agent.defaults import render, user_state_dir

    target = Path(path)
    if target.exists() and not force:
        print(f"hive-agent: {target} exists; not replaced (--force replaces it)", file=sys.stderr)
        return 2
    if data_dir is None:
        data_dir = "/var/lib/hive-agent" if os.geteuid() == 0 else str(user_state_dir())
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(data_dir), "utf-8")
    print(f"wrote {target} (data_dir {data_dir}); check it with: hive-agent check -c {target}")
    return 0


# Everything the agent writes (journal, dead letters with purchases and vendor answers, the
# identity map, cursors, locks) is private: files 0600, directories 0700, whatever umask the
# agent was started with. The delivery processes inherit it.
PRIVATE_UMASK = 0o077


def _trusted_data_dir(cfg: AgentConfig) -> None:
    """Refuse, in one line, a data_dir another user owns or may write, or with a symlink in it."""
    from agent import datadir

    try:
        datadir.prepare(cfg.agent.data_dir)
    except datadir.Untrusted as exc:
        print(f"hive-agent: refusing data_dir: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_run(path: str) -> int:
    from agent.memory import track_pools

    track_pools()  # before the imports: every arena they and the agent map can be thinned
    from agent.app import App, delivery_groups
    from agent.delivery.supervisor import prefork
    from agent.log import setup_logging

    os.umask(PRIVATE_UMASK)
    text = _read(path)
    cfg = _load(path, text)
    setup_logging(cfg.agent.log_level, cfg.agent.log_format, "main")
    secrets.install(cfg)
    # Before the event loop and any thread: the delivery processes share this process's pages.
    preforked = prefork(cfg, delivery_groups(cfg))
    return event_loop_runner()(App(cfg, Path(path), preforked, text).run())


def cmd_deliver(path: str, ready_fd: int | None, group: int, control_fd: int | None, on_stdin: bool) -> int:
    from agent.memory import cap_arenas, track_pools

    track_pools()
    from agent.delivery.process import run_delivery
    from agent.log import setup_logging

    os.umask(PRIVATE_UMASK)
    cap_arenas()
    # Started by the main process: the config it runs comes on stdin (the file may have changed since).
    cfg = _load(path, sys.stdin.read() if on_stdin else None)
    setup_logging(cfg.agent.log_level, cfg.agent.log_format, "delivery" if group == 0 else f"delivery-{group}")
    secrets.install(cfg)
    return event_loop_runner()(run_delivery(cfg, ready_fd, group, control_fd))


def cmd_deadletter(args: argparse.Namespace) -> int:
    import orjson

    from agent.deadletter import DeadLetterStore
    from agent.paths import DataPaths

    cfg = _load(args.config)
    _trusted_data_dir(cfg)
    store = DeadLetterStore(DataPaths(cfg.agent.data_dir).deadletter)
    if args.deadletter_command == "list":
        summary = store.summary()
        if not summary:
            print("no dead letters")
        for source, info in summary.items():
            print(f"{source}: {info['count']} records")
            if info["unreadable"]:
                print(f"  {info['unreadable']:8d}  lines that are no dead letters (torn by a crash?), skipped")
            for reason, n in info["reasons"][:10]:
                print(f"  {n:8d}  {reason[:160]}")
            for line in info["samples"]:
                print(f"    sample: {line['tag']} {line['time']} {orjson.dumps(line['record']).decode()[:160]}")
        pending = store.spooled()
        if pending:
            print(f"{len(pending)} replay spool files wait for the agent to journal them")
        return 0
    names = {o.name for o in cfg.outputs} | {f.name for f in cfg.filters}
    if args.output not in names:
        print(
            f"hive-agent: no output or filter named {args.output!r} in {args.config} "
            f"(known: {', '.join(sorted(names))})",
            file=sys.stderr,
        )
        return 2
    n, spool = store.take_for_replay(args.output, args.reason)
    if spool is None:
        print(f"no dead letters of {args.output}" + (f" with reason containing {args.reason!r}" if args.reason else ""))
        return 0
    print(
        f"{n} dead letters of {args.output} re-queued ({spool.name}); the running agent journals them "
        f"within a second, or the next start does"
    )
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    """Exit 0 with the rows (none is fine), 2 when there is no ledger to read."""
    import orjson

    from agent.ledger import report
    from agent.paths import DataPaths

    cfg = _load(args.config)
    paths = DataPaths(cfg.agent.data_dir)
    if not paths.ledger.exists():
        print(f"hive-agent: no ledger in {paths.root} (the agent has not run with ledger = true)", file=sys.stderr)
        return 2
    rows = report.query(paths.ledger, args.day, args.game, args.output)
    print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() if args.json else report.render(rows))
    note = report.as_of(report.settled_at(paths.ledger))
    if _agent_running(paths.lock):
        note += "; the agent is running: what it sent since then is settled within a second"
    print(note, file=sys.stderr if args.json else sys.stdout)
    return 0


def _agent_running(lock: Path) -> bool:
    """Does an agent hold this data_dir's lock?"""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Every command, not only run: a replay or an init under umask 000 makes private files too.
    os.umask(PRIVATE_UMASK)
    if args.command == "version":
        print(f"hive-agent {__version__}")
        return 0
    if args.command == "status":
        return cmd_status(_config_path(args.config), args.json, args.interval)
    if args.command == "reload":
        return cmd_reload(_config_path(args.config))
    if args.command == "tap":
        return cmd_tap(_config_path(args.config), args.match)
    if args.command == "convert":
        return cmd_convert(args.file, args.data_dir)
    if args.command == "init":
        return cmd_init(args.path, args.data_dir, args.force)
    if args.command == "check":
        return cmd_check(_config_path(args.config))
    if args.command == "run":
        return cmd_run(_config_path(args.config))
    if args.command == "deadletter":
        args.config = _config_path(args.config)
        return cmd_deadletter(args)
    if args.command == "ledger":
        args.config = _config_path(args.config)
        return cmd_ledger(args)
    if args.command == "deliver":
        return cmd_deliver(args.config, args.ready_fd, args.group, args.control_fd, args.config_on_stdin)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
