"""The ``cryptoflow`` console command. Each subcommand lives in its own module here and
registers itself through ``register(subparsers)``; ``main`` loads settings once and hands
them to the handler."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from cryptoflow.core.config import load_settings
from cryptoflow.core.errors import CryptoflowError
from cryptoflow.core.logs import setup_logging

# Subcommand modules, in the order --help lists them.
COMMANDS = (
    "setup",
    "services",
    "config",
    "psql",
    "run",
    "up",
    "dashboard",
    "ingest",
    "simulate",
    "status",
    "checkpoints",
    "history",
    "query",
    "replay",
    "maintain",
    "validate",
    "dq",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryptoflow",
        description=(
            "Real-time crypto trade lakehouse: Binance @trade streams -> Kafka -> Spark "
            "Delta bronze/silver/gold -> PostgreSQL. Configuration comes from CRYPTOFLOW_* "
            "environment variables and an optional .env file (see `cryptoflow config --help`)."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"cryptoflow.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passes_through", False):  # only `psql` forwards them
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        settings = load_settings()
        setup_logging("DEBUG" if args.verbose else settings.log_level)
        return int(args.handler(settings, args) or 0)
    except CryptoflowError as e:
        print(f"cryptoflow: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        logging.getLogger("cryptoflow").info("interrupted")
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
