"""The embedded PostgreSQL cluster: ``initdb`` / ``pg_ctl`` under the data dir, TCP on loopback.

Three roles log in: an admin (owns the schema, applies migrations), ``cryptoflow_app`` (the
pipeline's writes, member of ``cryptoflow_writer``) and ``cryptoflow_analyst`` (read only,
member of ``cryptoflow_reader``). Their passwords are generated once and kept in a 0600 file.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import parse_dsn

from cryptoflow.core.config import Settings
from cryptoflow.core.db import connect
from cryptoflow.core.errors import ServiceError
from cryptoflow.core.services.process import ensure_port_free, port_open, wait_for

log = logging.getLogger(__name__)
HOST = "127.0.0.1"
ADMIN_USER = "cryptoflow_admin"
APP_USER = "cryptoflow_app"
ANALYST_USER = "cryptoflow_analyst"


def root(s: Settings) -> Path:
    return s.data_dir.resolve() / "postgres"


def pgdata(s: Settings) -> Path:
    return root(s) / "pgdata"


def _credentials_file(s: Settings) -> Path:
    return root(s) / "credentials.json"


def credentials(s: Settings) -> dict[str, str]:
    """Passwords of the embedded roles, created on first use."""
    f = _credentials_file(s)
    if f.exists():
        return json.loads(f.read_text())
    f.parent.mkdir(parents=True, exist_ok=True)
    creds = {u: secrets.token_urlsafe(18) for u in (ADMIN_USER, APP_USER, ANALYST_USER)}
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(creds, out)
    return creds


def _dsn(s: Settings, user: str) -> str:
    pw = credentials(s)[user]
    return f"postgresql://{user}:{pw}@{HOST}:{s.postgres_port}/{s.postgres_db}"


def pipeline_dsn(s: Settings) -> str:
    """DSN the pipeline writes with."""
    return s.postgres_dsn or _dsn(s, APP_USER)


def admin_dsn(s: Settings) -> str:
    """DSN that owns the schema and applies migrations."""
    return s.postgres_admin_dsn or s.postgres_dsn or _dsn(s, ADMIN_USER)


def reader_dsn(s: Settings) -> str:
    """DSN of the read-only login: the configured one, else the embedded analyst role (an
    external setup without ``postgres_reader_dsn`` falls back to the pipeline's DSN)."""
    if s.postgres_reader_dsn:
        return s.postgres_reader_dsn
    return s.postgres_dsn if not s.embedded_postgres else _dsn(s, ANALYST_USER)


def bin_dir() -> Path:
    """Directory holding initdb / pg_ctl: PATH first, then Debian's versioned layout."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if candidates:
        return Path(candidates[-1]).parent
    raise ServiceError(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found: install them "
        "(apt-get install -y postgresql) or set CRYPTOFLOW_POSTGRES_DSN to an existing server"
    )


def _as_owner() -> list[str]:
    """PostgreSQL refuses to run as root; run its binaries as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as e:
        raise ServiceError(
            "running as root, and there is no 'postgres' system user to run the embedded "
            "PostgreSQL as: install the postgresql package or run cryptoflow as a normal user"
        ) from e
    runuser = shutil.which("runuser") or next(
        (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.path.exists(p)), None
    )
    if not runuser:
        raise ServiceError(
            "running as root, and `runuser` (util-linux) is missing to run PostgreSQL as the "
            "'postgres' user: install util-linux or run cryptoflow as a normal user"
        )
    return [runuser, "-u", "postgres", "--"]


def _check_traversable(path: Path) -> None:
    if os.geteuid() != 0:
        return
    for parent in [path, *path.parents]:
        if parent.exists() and not os.stat(parent).st_mode & 0o001:
            raise ServiceError(
                f"{parent} is not searchable by the 'postgres' user that runs the embedded "
                f"cluster: chmod o+x {parent}, or choose CRYPTOFLOW_DATA_DIR elsewhere"
            )


def _pg(s: Settings, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [*_as_owner(), str(bin_dir() / tool), *args]
    # its own session: a stop signal to `up`'s process group is not for initdb or pg_ctl
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd="/", start_new_session=True)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ServiceError(f"{tool} failed: {' '.join(detail)}")
    return proc


def _initdb(s: Settings) -> None:
    data = pgdata(s)
    data.mkdir(parents=True, exist_ok=True)
    _check_traversable(data)
    pwfile = root(s) / ".pwfile"
    pwfile.write_text(credentials(s)[ADMIN_USER] + "\n")
    try:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for p in (data, pwfile):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        data.chmod(0o700)
        _pg(
            s, "initdb", "-D", str(data), "-U", ADMIN_USER, f"--pwfile={pwfile}",
            "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8",
            "--locale=C.UTF-8",
        )  # fmt: skip
    finally:
        pwfile.unlink(missing_ok=True)


def _write_conf(s: Settings) -> None:
    conf = pgdata(s) / "postgresql.auto.conf"
    lines = [
        f"listen_addresses = '{HOST}'",
        f"port = {s.postgres_port}",
        "unix_socket_directories = ''",
        "max_connections = 60",
        # a query that cannot prune raw_trades' day partitions locks each one and its indexes
        "max_locks_per_transaction = 256",
        "shared_buffers = '128MB'",
        "logging_collector = off",
        "log_min_messages = warning",
        "synchronous_commit = on",
        "track_commit_timestamp = on",
    ]
    conf.write_text("\n".join(lines) + "\n")
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(conf, pw.pw_uid, pw.pw_gid)


def running(s: Settings) -> bool:
    if not (pgdata(s) / "PG_VERSION").exists():
        return False
    return _pg(s, "pg_ctl", "status", "-D", str(pgdata(s)), check=False).returncode == 0


def start(s: Settings) -> bool:
    """Start the cluster (initialising it the first time). True when it was started."""
    if running(s):
        return False
    root(s).mkdir(parents=True, exist_ok=True)
    ensure_port_free(HOST, s.postgres_port, "PostgreSQL", "CRYPTOFLOW_POSTGRES_PORT")
    if not (pgdata(s) / "PG_VERSION").exists():
        _initdb(s)
    _write_conf(s)
    logfile = root(s) / "postgres.log"
    logfile.touch()
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(logfile, pw.pw_uid, pw.pw_gid)
    _pg(s, "pg_ctl", "start", "-D", str(pgdata(s)), "-l", str(logfile), "-w", "-t", "60")
    wait_for(lambda: port_open(HOST, s.postgres_port), 30, "PostgreSQL to accept connections")
    _ensure_database(s)
    log.info("postgres started port=%d", s.postgres_port)
    return True


def _ensure_database(s: Settings) -> None:
    pw = credentials(s)[ADMIN_USER]
    conn = psycopg2.connect(
        host=HOST, port=s.postgres_port, user=ADMIN_USER, password=pw, dbname="postgres"
    )
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (s.postgres_db,))
            if not cur.fetchone():
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(s.postgres_db)))
    finally:
        conn.close()


def ensure_login_roles(s: Settings) -> None:
    """Create the embedded app and analyst logins inside the migration's group roles."""
    creds = credentials(s)
    with psycopg2.connect(admin_dsn(s)) as conn, conn.cursor() as cur:
        for user, group in ((APP_USER, "cryptoflow_writer"), (ANALYST_USER, "cryptoflow_reader")):
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(
                sql.SQL(verb + " ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(user)),
                (creds[user],),
            )
            cur.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(user))
            )
    conn.close()


def ensure_external_logins(s: Settings) -> list[str]:
    """On an external server, create (or re-password) the logins named by the pipeline and
    reader DSNs inside cryptoflow_writer / cryptoflow_reader, using the admin DSN. A DSN whose
    user is the admin itself is left alone. Returns the logins it ensured."""
    admin_user = parse_dsn(admin_dsn(s)).get("user")
    wanted = [(s.postgres_dsn, "cryptoflow_writer"), (s.postgres_reader_dsn, "cryptoflow_reader")]
    ensured: list[str] = []
    conn = connect(admin_dsn(s))
    try:
        with conn, conn.cursor() as cur:
            for dsn, group in wanted:
                parts = parse_dsn(dsn) if dsn else {}
                user, password = parts.get("user"), parts.get("password")
                if not user or user == admin_user:
                    continue
                if not password:
                    raise ServiceError(
                        f"the DSN for {group} names user {user!r} without a password: add one "
                        "so `cryptoflow setup` can create that login"
                    )
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(
                    sql.SQL(verb + " ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(user)),
                    (password,),
                )
                cur.execute(
                    sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(user))
                )
                ensured.append(f"{user} in {group}")
    finally:
        conn.close()
    return ensured


def stop(s: Settings) -> bool:
    if not running(s):
        return False
    _pg(s, "pg_ctl", "stop", "-D", str(pgdata(s)), "-m", "fast", "-w", "-t", "60")
    return True
