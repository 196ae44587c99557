"""The ``cryptoflow`` console command. Each subcommand lives in its own module here and
registers itself through ``register(subparsers)``; ``main`` loads settings once and hands
them to the handler."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from cryptoflow.core.config import load_settings
from cryptoflow.core.errors import CryptoflowError, error_summary
from cryptoflow.core.logs import FILE_ONLY, default_log_file, log_file, setup_logging

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
    "reconcile",
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
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        help="debug logging, and every library's log (Spark, Great Expectations, py4j) on the "
        "terminal too; without it those go to the log file only",
    )  # fmt: skip
    parser.add_argument(
        "--log-file", metavar="PATH",
        help="where the full log goes (default <data_dir>/logs/cryptoflow.log; '-': stderr "
        "only, as the children of `cryptoflow up` do, whose stderr is their log file)",
    )  # fmt: skip
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
        log_to = None if args.log_file == "-" else Path(args.log_file or default_log_file(settings))
        setup_logging(settings.log_level, verbose=args.verbose, log_file=log_to)
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
    except Exception as e:  # noqa: BLE001 - one line on the terminal, the traceback in the log
        return _unexpected(args.command, e)


def _from_spark(e: BaseException) -> bool:
    return type(e).__module__.split(".")[0] in ("py4j", "pyspark")


def _unexpected(command: str, e: Exception) -> int:
    """An error nobody turned into a ``CryptoflowError``: one line saying what failed and
    where the details are; the traceback goes to the log file (to stderr without one)."""
    where = log_file()
    logging.getLogger("cryptoflow").error(
        "`cryptoflow %s` failed", command, exc_info=e, extra={FILE_ONLY: where is not None}
    )
    details = f" (details in {where})" if where is not None else ""
    if where is not None and _from_spark(e):  # the JVM's own words are in its log
        details = f" (details in {where}; the Spark JVM's in {where.with_name('spark.log')})"
    print(
        f"cryptoflow: error: `cryptoflow {command}` failed: {error_summary(e)}{details}",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
