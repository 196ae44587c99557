"""``cryptoflow psql``: psql on the serving database, as the read-only login by default."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from psycopg2.extensions import make_dsn, parse_dsn

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import ServiceError
from cryptoflow.core.services.postgres import bin_dir, pipeline_dsn, reader_dsn


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "psql",
        help="open psql on the serving tables (read-only login; --writer for the pipeline's)",
        description=(
            "Run psql on the serving database as the read-only analyst login, or with "
            "--writer as the pipeline's login. The password reaches psql through a private "
            "password file (mode 0600, removed when psql exits), never a command line or the "
            "environment. Every other argument goes to psql as it is (-c SQL, -f FILE, -At ...)."
        ),
        epilog=(
            "examples:\n  cryptoflow psql\n"
            "  cryptoflow psql -c 'select symbol, count(*) from raw_trades group by 1'\n"
            "  cryptoflow psql --writer -f my_fix.sql"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--writer", action="store_true", help="connect as the pipeline's login")
    p.set_defaults(handler=run, passes_through=True)  # unknown arguments go to psql


def psql_binary() -> str:
    """psql from PATH, else next to the embedded server's binaries."""
    found = shutil.which("psql")
    if found:
        return found
    try:
        candidate = bin_dir() / "psql"
    except ServiceError:
        candidate = None
    if candidate is not None and candidate.exists():
        return str(candidate)
    raise ServiceError("psql was not found: install it (apt-get install -y postgresql-client)")


def _pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def split_password(dsn: str) -> tuple[str, str | None, str]:
    """(conninfo without the password, the password, its ~/.pgpass line) of ``dsn``."""
    params = parse_dsn(dsn)
    password = params.pop("password", None)
    line = ":".join(
        _pgpass_field(params.get(key) or default)
        for key, default in (("host", "*"), ("port", "*"), ("dbname", "*"), ("user", "*"))
    )
    return make_dsn(**params), password, f"{line}:{_pgpass_field(password or '')}\n"


def run(settings: Settings, args: argparse.Namespace) -> int:
    dsn = pipeline_dsn(settings) if args.writer else reader_dsn(settings)
    conninfo, password, pgpass_line = split_password(dsn)
    argv = [psql_binary(), conninfo, *args.extra]
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    with tempfile.TemporaryDirectory(prefix="cryptoflow-psql-") as tmp:
        if password is not None:
            passfile = Path(tmp) / "pgpass"
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(pgpass_line)
            env["PGPASSFILE"] = str(passfile)
        # Ctrl-C is psql's (it cancels the running query), not a reason for us to exit. A
        # handler, not SIG_IGN: an ignored signal would stay ignored in psql after exec.
        previous = signal.signal(signal.SIGINT, lambda *_: None)
        try:
            return subprocess.call(argv, env=env)
        finally:
            signal.signal(signal.SIGINT, previous)
