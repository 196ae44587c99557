"""The Docker path: the compose file validates, and `cryptoflow setup` against external
services creates the pipeline's and Grafana's logins in the right group roles."""

from __future__ import annotations

import psycopg2
import pytest
from psycopg2.extensions import parse_dsn

from cryptoflow.db import connect
from cryptoflow.services import postgres


def _dsn_for(admin: str, user: str, password: str) -> str:
    p = parse_dsn(admin)
    return f"postgresql://{user}:{password}@{p['host']}:{p['port']}/{p['dbname']}"


@pytest.mark.integration
def test_setup_creates_external_logins_with_least_privilege(settings, unique):
    admin = postgres.admin_dsn(settings)
    external = settings.replace(
        postgres_admin_dsn=admin,
        postgres_dsn=_dsn_for(admin, f"app_{unique}", "app-pw"),
        postgres_reader_dsn=_dsn_for(admin, f"grafana_{unique}", "grafana-pw"),
    )
    assert not external.embedded_postgres
    ensured = postgres.ensure_external_logins(external)
    assert ensured == [
        f"app_{unique} in cryptoflow_writer",
        f"grafana_{unique} in cryptoflow_reader",
    ]
    # Idempotent: a second run re-passwords instead of failing.
    assert postgres.ensure_external_logins(external) == ensured
    assert postgres.reader_dsn(external) == external.postgres_reader_dsn

    with connect(postgres.reader_dsn(external)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM metrics")
        assert cur.fetchone()[0] >= 0
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("INSERT INTO metrics (symbol) VALUES ('X')")
    conn.close()
    with connect(external.postgres_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT has_table_privilege('raw_trades', 'INSERT')")
        assert cur.fetchone()[0] is True
        cur.execute("SELECT has_table_privilege('raw_trades', 'DELETE')")
        assert cur.fetchone()[0] is False
    conn.close()


@pytest.mark.integration
def test_external_login_without_password_is_a_clear_error(settings, unique):
    from cryptoflow.errors import ServiceError

    admin = postgres.admin_dsn(settings)
    p = parse_dsn(admin)
    external = settings.replace(
        postgres_admin_dsn=admin,
        postgres_dsn=admin,
        postgres_reader_dsn=f"postgresql://nopw_{unique}@{p['host']}:{p['port']}/{p['dbname']}",
    )
    with pytest.raises(ServiceError, match=r"names user 'nopw_\w+' without a password"):
        postgres.ensure_external_logins(external)
