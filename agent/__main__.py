"""`camera-agent`: run the agent."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__
from agent.app import run_agent, selftest
from agent.camera.dump import dump_devices
from agent.config import AgentConfig, load_config
from agent.doctor import diagnose
from agent.errors import CameraError, ConfigError
from agent.health import check_health, health_path
from agent.process import run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="camera-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"camera-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="connect to the broker and serve the camera")
    run.add_argument("--config", type=Path, help="TOML config file (environment overrides it)")
    doctor = sub.add_parser("doctor", help="report cameras, encoder, broker and MediaMTX")
    doctor.add_argument("--config", type=Path, help="TOML config file (environment overrides it)")
    doctor.add_argument(
        "--dump", type=Path, metavar="DIR",
        help="write what the cameras report into DIR, in the test-fixture layout (agent stopped)",
    )  # fmt: skip
    tour = sub.add_parser("selftest", help="drive the camera through a scripted tour")
    tour.add_argument("--config", type=Path, help="TOML config file (environment overrides it)")
    health = sub.add_parser("health", help="exit 0 if the running agent is healthy (HEALTHCHECK)")
    health.add_argument("--config", type=Path, help="TOML config file (environment overrides it)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"camera-agent: {err}", file=sys.stderr)
        return 2
    if args.command == "health":
        healthy, reason = check_health(health_path(config.storage.state_dir))
        print(f"{'healthy' if healthy else 'unhealthy'}: {reason}")
        return 0 if healthy else 1
    if args.command == "selftest":
        return _selftest(config)
    if args.command == "doctor":
        return _doctor(config) if args.dump is None else _dump(config, args.dump)
    logging.basicConfig(
        level=config.log.level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(run_agent(config))
    except (ConfigError, CameraError) as err:
        # Start-up problems a user fixes (a certificate, an unplugged camera): no traceback.
        logging.getLogger("agent").error("%s", err)
        return 2
    return 0


def _doctor(config: AgentConfig) -> int:
    findings = asyncio.run(diagnose(config))
    for finding in findings:
        print(finding.line())
    return 0 if all(f.ok for f in findings) else 1


def _dump(config: AgentConfig, directory: Path) -> int:
    cam = config.camera
    size = (cam.width, cam.height, cam.fps)
    try:
        findings = asyncio.run(dump_devices(directory, Path("/dev"), run_command, size))
    except OSError as err:  # a full disk, a directory that cannot be written
        print(f"camera-agent: cannot write the dump into {directory}: {err}", file=sys.stderr)
        return 1
    for finding in findings:
        print(finding.line())
    return 0 if all(f.ok for f in findings) else 1


def _selftest(config: AgentConfig) -> int:
    steps = asyncio.run(selftest(config))
    for step in steps:
        print(step.line())
    failed = sum(not s.ok for s in steps)
    print(f"{len(steps) - failed} passed, {failed} failed")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
