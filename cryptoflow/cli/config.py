"""``cryptoflow config``: the resolved configuration as JSON, secrets masked."""

from __future__ import annotations

import argparse

from cryptoflow.config import Settings, settings_help, to_json


def register(sub: argparse._SubParsersAction) -> None:
    rows = "\n".join(f"  {var:<38} {default!s:<22} {doc}" for var, default, doc in settings_help())
    p = sub.add_parser(
        "config",
        help="print the resolved configuration as JSON (secrets masked)",
        description="Print the resolved configuration as JSON, passwords masked.",
        epilog=f"environment variables (default, meaning):\n{rows}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    print(to_json(settings))
    return 0
