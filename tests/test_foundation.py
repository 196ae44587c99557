"""Foundation against the real services: broker, Spark + Kafka source, Delta, migrations."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from confluent_kafka import Producer

from cryptoflow.core import db, services
from cryptoflow.core.services import kafka, postgres
from tests.conftest import make_data_dir, make_settings

pytestmark = pytest.mark.integration

RAW_TRADES = [
    "symbol", "trade_id", "price", "quantity", "is_buyer_maker", "event_time", "trade_time",
    "ingestion_time", "spark_time", "exchange_latency_ms", "source_latency_ms",
    "end_to_end_latency_ms",
]  # fmt: skip
METRICS = [
    "symbol", "window_start", "window_end", "trade_count", "total_volume", "avg_price",
    "min_price", "max_price", "price_stddev", "vwap", "buy_volume", "sell_volume",
    "buy_sell_ratio", "trade_intensity", "liquidity_proxy", "avg_exchange_latency_ms",
    "avg_source_latency_ms", "avg_end_to_end_latency_ms",
]  # fmt: skip


def test_topic_created_and_message_read_back_through_spark(settings, spark, unique):
    topic = f"foundation-{unique}"
    assert kafka.ensure_topic(settings, topic, partitions=2) is True
    assert kafka.ensure_topic(settings, topic) is False  # idempotent
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "acks": "all"})
    producer.produce(topic, key=b"BTCUSDT", value=b'{"hello":"kafka"}', timestamp=1700000000123)
    assert producer.flush(30) == 0
    rows = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", settings.bootstrap_servers)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .collect()
    )
    assert len(rows) == 1
    assert bytes(rows[0]["key"]) == b"BTCUSDT"
    assert bytes(rows[0]["value"]) == b'{"hello":"kafka"}'
    assert int(rows[0]["timestamp"].timestamp() * 1000) == 1700000000123


def test_delta_time_travel_reads_version_zero(settings, spark, unique):
    path = settings.table_path(f"foundation_{unique}")
    spark.range(3).write.format("delta").save(path)
    spark.range(10).write.format("delta").mode("overwrite").save(path)
    assert spark.read.format("delta").load(path).count() == 10
    v0 = spark.read.format("delta").option("versionAsOf", 0).load(path)
    assert sorted(r.id for r in v0.collect()) == [0, 1, 2]


def test_spark_session_is_case_sensitive_and_small(spark):
    assert spark.conf.get("spark.sql.caseSensitive") == "true"
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"
    df = spark.createDataFrame([('{"t": 1, "T": 2}',)], ["v"]).selectExpr(
        "from_json(v, 't long, T long') AS j"
    )
    assert tuple(df.first()["j"]) == (1, 2)


def test_python_workers_run_the_drivers_interpreter(spark):
    """Spark's Python workers (``createDataFrame`` of local rows uses them) run the project's
    interpreter, not whatever ``python3`` is first on PATH (a different minor version there
    fails every such task)."""
    ran = spark.sparkContext.parallelize([0], 1).map(lambda _: sys.executable).collect()
    assert ran == [sys.executable]


def test_migrations_apply_twice_and_tables_have_design_columns(settings):
    dsn = postgres.admin_dsn(settings)
    db.apply_migrations(dsn)  # the fixture applied them already; a second run is a no-op
    assert db.apply_migrations(dsn) == []
    raw = [c for c, _ in db.table_columns(dsn, "raw_trades")]
    assert raw[: len(RAW_TRADES)] == RAW_TRADES
    metrics = [c for c, _ in db.table_columns(dsn, "metrics")]
    assert metrics[: len(METRICS)] == METRICS
    types = dict(db.table_columns(dsn, "raw_trades"))
    assert types["price"] == types["quantity"] == "numeric"
    with db.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'metrics'::regclass AND i.indisprimary"
        )
        assert {r[0] for r in cur.fetchall()} == {"symbol", "window_start", "window_end"}
    conn.close()


def test_roles_are_least_privilege(settings):
    import psycopg2

    with db.connect(postgres.pipeline_dsn(settings)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM raw_trades")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("DROP TABLE metrics")
    conn.close()
    with db.connect(postgres.reader_dsn(settings)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM metrics")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("INSERT INTO metrics (symbol) VALUES ('X')")
    conn.close()


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(settings.data_dir),
        "CRYPTOFLOW_DATA_DIR": str(settings.data_dir),
        "CRYPTOFLOW_JAR_CACHE": str(settings.jar_cache),
        "CRYPTOFLOW_KAFKA_PORT": str(settings.kafka_port),
        "CRYPTOFLOW_KAFKA_CONTROLLER_PORT": str(settings.kafka_controller_port),
        "CRYPTOFLOW_POSTGRES_PORT": str(settings.postgres_port),
        "CRYPTOFLOW_KAFKA_HEAP": settings.kafka_heap,
    }
    return subprocess.run(
        [sys.executable, "-m", "cryptoflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_services_up_status_down_up_keeps_data():
    """The CLI life cycle on its own data dir and ports; a row written survives down/up."""
    s = make_settings(make_data_dir())
    try:
        up = _cli(s, "services", "up")
        assert up.returncode == 0, up.stderr
        assert "kafka: started" in up.stdout and "postgres: started" in up.stdout
        again = _cli(s, "services", "up")
        assert "already running" in again.stdout
        status = _cli(s, "services", "status")
        assert status.returncode == 0 and status.stdout.count("healthy") == 2, status.stdout

        kafka.ensure_topic(s, "keep-me")
        with db.connect(postgres.admin_dsn(s)) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE keep_me (v int)")
            cur.execute("INSERT INTO keep_me VALUES (%s)", (42,))
        conn.close()

        assert _cli(s, "services", "down").returncode == 0
        down_status = _cli(s, "services", "status")
        assert down_status.returncode == 1 and "not running" in down_status.stdout

        assert _cli(s, "services", "up").returncode == 0
        assert "keep-me" in kafka_topics(s)
        with db.connect(postgres.admin_dsn(s)) as conn, conn.cursor() as cur:
            cur.execute("SELECT v FROM keep_me")
            assert cur.fetchall() == [(42,)]
        conn.close()
    finally:
        services.down(s, progress=lambda _: None)
        shutil.rmtree(s.data_dir, ignore_errors=True)


def kafka_topics(s) -> set[str]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": s.bootstrap_servers})
    return set(admin.list_topics(timeout=10).topics)


def test_port_in_use_is_a_clear_error(settings):
    s = make_settings(make_data_dir(), postgres_port=settings.postgres_port)
    try:
        result = _cli(s, "services", "up")
        assert result.returncode == 2
        assert f"port {settings.postgres_port} for PostgreSQL is already in use" in result.stderr
        assert "CRYPTOFLOW_POSTGRES_PORT" in result.stderr
    finally:
        services.down(s, progress=lambda _: None)
        shutil.rmtree(s.data_dir, ignore_errors=True)


def test_unreachable_external_postgres_is_reported(settings):
    from cryptoflow.core.errors import ServiceError

    with pytest.raises(
        ServiceError,
        match=r"PostgreSQL at postgresql://u:\*\*\*@127\.0\.0\.1:1/x"
        r" is unreachable",
    ):
        db.connect("postgresql://u:pw@127.0.0.1:1/x")


def test_cli_help_on_every_subcommand():
    from cryptoflow.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, subparser in sub.choices.items():
        text = subparser.format_help()
        assert len(text) > 80, name
