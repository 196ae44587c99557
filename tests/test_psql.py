"""``cryptoflow psql`` and ``cryptoflow config --dsn`` against the session's PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cryptoflow.cli.psql import split_password
from cryptoflow.core.services import postgres
from cryptoflow.supervisor import child_env


def _cryptoflow(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cryptoflow", *args],
        env=child_env(settings), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_split_password_keeps_it_off_the_conninfo_and_escapes_the_pgpass_line():
    conninfo, password, line = split_password("postgresql://u:p%3Aw%5Cd@h:5433/db?sslmode=require")
    assert password == "p:w\\d"
    assert "p:w" not in conninfo and "sslmode=require" in conninfo and "user=u" in conninfo
    assert line == "h:5433:db:u:p\\:w\\\\d\n"
    assert split_password("host=h dbname=d user=u")[1:] == (None, "h:*:d:u:\n")


@pytest.mark.integration
def test_psql_reads_as_the_reader_and_is_refused_an_insert(settings):
    out = _cryptoflow(
        settings, "psql", "-At", "-c", "select current_user, count(*) from raw_trades"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(f"{postgres.ANALYST_USER}|")
    refused = _cryptoflow(settings, "psql", "-c", "insert into metrics (symbol) values ('X')")
    assert refused.returncode != 0
    assert "permission denied" in refused.stderr
    writer = _cryptoflow(settings, "psql", "--writer", "-At", "-c", "select current_user")
    assert writer.returncode == 0, writer.stderr
    assert writer.stdout.strip() == postgres.APP_USER


@pytest.mark.integration
def test_psql_passes_no_password_on_its_command_line_or_environment(settings, tmp_path):
    """A fake psql first on PATH records what it was given."""
    fake = tmp_path / "psql"
    fake.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {tmp_path}/argv\n'
        f"env > {tmp_path}/env\n"
        f'stat -c %a "$PGPASSFILE" > {tmp_path}/mode; cat "$PGPASSFILE" > {tmp_path}/pgpass\n'
    )
    fake.chmod(0o755)
    env = child_env(settings) | {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    subprocess.run([sys.executable, "-m", "cryptoflow", "psql", "-c", "select 1"], env=env,
                   check=True, timeout=120)  # fmt: skip
    password = postgres.credentials(settings)[postgres.ANALYST_USER]
    assert password not in (tmp_path / "argv").read_text()
    assert password not in (tmp_path / "env").read_text()
    assert (tmp_path / "mode").read_text().strip() == "600"
    assert (tmp_path / "pgpass").read_text().rstrip().endswith(":" + password)


@pytest.mark.integration
def test_config_dsn_masks_unless_asked(settings):
    masked = _cryptoflow(settings, "config", "--dsn", "reader")
    assert masked.returncode == 0, masked.stderr
    assert masked.stdout.strip() == postgres.reader_dsn(settings).replace(
        postgres.credentials(settings)[postgres.ANALYST_USER], "***"
    )
    shown = _cryptoflow(settings, "config", "--dsn", "admin", "--show-password")
    assert shown.stdout.strip() == postgres.admin_dsn(settings)
