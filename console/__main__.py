"""`camera-console`: the browser console's service (behind nginx, which checks certificates)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.errors import ConfigError
from console.app import run_console
from console.config import load_console_config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="camera-console", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="connect to the broker and serve nginx on the socket")
    run.add_argument("--config", type=Path, help="TOML config file (environment overrides it)")
    args = parser.parse_args(argv)
    try:
        config = load_console_config(args.config)
    except ConfigError as err:
        print(f"camera-console: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log.level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(run_console(config))
    except ConfigError as err:
        print(f"camera-console: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
