"""``cryptoflow config``: the resolved configuration as JSON, secrets masked; or one DSN."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from cryptoflow.core.config import Settings, mask_dsn, settings_help
from cryptoflow.core.services.postgres import admin_dsn, pipeline_dsn, reader_dsn

# The logins of the serving database, by the name `--dsn` takes.
DSNS: dict[str, Callable[[Settings], str]] = {
    "reader": reader_dsn,
    "writer": pipeline_dsn,
    "admin": admin_dsn,
}


def register(sub: argparse._SubParsersAction) -> None:
    rows = "\n".join(f"  {var:<38} {default!s:<22} {doc}" for var, default, doc in settings_help())
    p = sub.add_parser(
        "config",
        help="print the resolved configuration as JSON (secrets masked), or one DSN",
        description=(
            "Print the resolved configuration as JSON, passwords masked. With --dsn, print "
            "the PostgreSQL DSN of one login for other tools (password masked unless "
            "--show-password): reader is the read-only analyst login, writer the pipeline's, "
            "admin the schema owner's."
        ),
        epilog=(
            "examples:\n  cryptoflow config --dsn reader\n"
            '  psql "$(cryptoflow config --dsn reader --show-password)"\n\n'
            f"environment variables (default, meaning):\n{rows}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--markdown",
        action="store_true",
        help="print the table of every setting (variable, default, meaning) as Markdown instead",
    )
    p.add_argument("--dsn", choices=tuple(DSNS), help="print the DSN of this login instead")
    p.add_argument(
        "--show-password", action="store_true", help="with --dsn: print the password unmasked"
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


def to_json(settings: Settings) -> str:
    """The resolved configuration, with the pipeline's (masked) DSN."""
    data = settings.as_public_dict()
    data["resolved"]["postgres"]["dsn"] = mask_dsn(pipeline_dsn(settings))
    return json.dumps(data, indent=2)


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.dsn:
        dsn = DSNS[args.dsn](settings)
        print(dsn if args.show_password else mask_dsn(dsn))
    elif args.markdown:
        print(settings_markdown())
    else:
        print(to_json(settings))
    return 0
