"""``cryptoflow config``: the resolved configuration as JSON, secrets masked."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    p.add_argument(
        "--markdown",
        action="store_true",
        help="print the table of every setting (variable, default, meaning) as Markdown instead",
    )
    p.set_defaults(handler=run)


def settings_markdown() -> str:
    """The configuration table of the README, generated from the settings' own docs."""
    home = str(Path.home())
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for var, default, doc in settings_help():
        shown = f"`{default.replace(home, '~')}`" if default else "(empty)"
        lines.append(f"| `{var}` | {shown} | {doc} |")
    return "\n".join(lines)


def run(settings: Settings, args: argparse.Namespace) -> int:
    print(settings_markdown() if args.markdown else to_json(settings))
    return 0
