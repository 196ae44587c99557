"""One place for configuration: ``CRYPTOFLOW_*`` environment variables and an optional ``.env``.

``load_settings()`` reads the environment once; the frozen ``Settings`` it returns is passed
down to every component. A ``CRYPTOFLOW_`` variable that no field knows is an error, so a typo
never silently becomes a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from cryptoflow.core.errors import ConfigError
from cryptoflow.core.streams import DEFAULT_STREAMS, KINDS, TRADE, StreamKind, kinds, topic_name

PREFIX = "CRYPTOFLOW_"
SOURCES = ("binance", "sim", "csv")
TIME_UNITS = ("MILLISECOND", "MICROSECOND")
BATCH_PLACEMENTS = ("auto", "executors", "driver")

#: Known Binance endpoints by short name (``CRYPTOFLOW_BINANCE_ENDPOINT``).
BINANCE_ENDPOINTS: dict[str, tuple[str, str]] = {
    "binance": ("wss://stream.binance.com:9443", "https://api.binance.com"),
    "vision": ("wss://data-stream.binance.vision", "https://data-api.binance.vision"),
    "us": ("wss://stream.binance.us:9443", "https://api.binance.us"),
    "testnet": ("wss://stream.testnet.binance.vision", "https://testnet.binance.vision"),
}


def _env(doc: str, default: Any = None, **kw: Any) -> Any:
    """A settings field; ``doc`` is its help text and the env var is derived from its name."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"doc": doc, **kw})
    return field(default=default, metadata={"doc": doc, **kw})


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Each field is read from ``CRYPTOFLOW_<FIELD NAME IN CAPS>``."""

    data_dir: Path = _env("Root for embedded services, lake and checkpoints", Path(".cryptoflow"))
    jar_cache: Path = _env(
        "Where Maven-resolved JARs are cached", Path.home() / ".cache" / "cryptoflow" / "jars"
    )
    maven_repo: str = _env(
        "Maven repository the JARs come from", "https://repo.maven.apache.org/maven2"
    )
    tool_cache: Path = _env(
        "Where binaries built from source are cached (the embedded SeaweedFS's weed)",
        Path.home() / ".cache" / "cryptoflow" / "tools",
    )
    # --- Kafka
    kafka_bootstrap_servers: str = _env(
        "External Kafka bootstrap servers; empty starts the embedded broker", ""
    )
    kafka_brokers: int = _env(
        "Embedded KRaft brokers, each also a controller voter: 1, or 3 for a replicated "
        "cluster (topics with replication factor 3 and min.insync.replicas 2) that survives "
        "one broker's death",
        1,
    )
    kafka_port: int = _env(
        "Port of the embedded broker; broker n of several listens on it + 2(n-1)", 19092
    )
    kafka_controller_port: int = _env(
        "KRaft controller port of the embedded broker; broker n's is it + 2(n-1)", 19093
    )
    kafka_heap: str = _env("JVM heap of each embedded broker", "512m")
    kafka_topic_prefix: str = _env(
        "Prefix of the topics of raw exchange frames: <prefix>.<kind>.raw, one per stream kind "
        "(binance.trades.raw, binance.aggtrades.raw, binance.klines.raw, binance.bookticker.raw)",
        "binance",
    )
    kafka_partitions: int = _env("Partitions of each raw topic when created", 3)
    kafka_retention_ms: int = _env("Retention of each raw topic when created", 7 * 24 * 3600 * 1000)
    # --- PostgreSQL
    postgres_dsn: str = _env(
        "DSN the pipeline writes with; empty starts the embedded cluster", "", secret=True
    )
    postgres_admin_dsn: str = _env(
        "DSN that applies migrations (defaults to postgres_dsn)", "", secret=True
    )
    postgres_reader_dsn: str = _env(
        "DSN of the read-only login (dashboards, Grafana) on an external server; `cryptoflow "
        "setup` creates that login in cryptoflow_reader. Empty: the embedded analyst login",
        "",
        secret=True,
    )
    postgres_port: int = _env("Port of the embedded PostgreSQL cluster", 15432)
    postgres_db: str = _env("Database of the embedded cluster", "crypto")
    # --- Spark
    spark_master: str = _env("Spark master URL", "local[2]")
    spark_shuffle_partitions: int = _env("spark.sql.shuffle.partitions", 2)
    spark_driver_memory: str = _env("Spark driver heap", "1g")
    spark_executor_memory: str = _env(
        "Heap of each executor on a cluster (spark.executor.memory; Spark needs 450m at least)",
        "512m",
    )
    spark_executor_cores: int = _env("Cores of each executor on a cluster", 1)
    spark_python_archive: str = _env(
        "A packed Python environment (venv-pack .tar.gz) shipped to a cluster's executors with "
        "spark.archives, whose bin/python runs their Python; empty: they run this interpreter's "
        "path, which then needs the same dependencies on every worker",
        "",
    )
    spark_workers: int = _env(
        "Workers of the local standalone Spark cluster (one executor's cores and memory each) "
        "that `cryptoflow services up` and `up` start; the jobs then run on it instead of "
        "CRYPTOFLOW_SPARK_MASTER. 0: no local cluster",
        0,
    )
    spark_master_port: int = _env("Port of the local Spark cluster's master", 17077)
    spark_master_ui_port: int = _env(
        "Port of the local Spark cluster master's web UI and its /json/ status", 18090
    )
    batch_placement: str = _env(
        "Where a micro-batch's per-row work (deduplication, PostgreSQL writes) runs: "
        "'executors' (Spark tasks, one PostgreSQL transaction per symbol partition), 'driver' "
        "(collected into the driver's Python: fewer jobs, the lowest latency on one machine) or "
        "'auto' (driver in local mode, executors on a cluster)",
        "auto",
    )
    lake_root: str = _env("Root of the Delta tables (path or URI); default <data_dir>/lake", "")
    checkpoint_root: str = _env("Root of streaming checkpoints; default <data_dir>/checkpoints", "")
    # --- Object storage: an s3a:// lake or checkpoint root (docs/object-storage.md)
    s3_endpoint: str = _env(
        "S3 endpoint of the s3a:// roots (http[s]://host[:port]; AWS: "
        "https://s3.<region>.amazonaws.com); empty with an s3a:// root starts the embedded "
        "SeaweedFS",
        "",
    )
    s3_access_key: str = _env(
        "S3 access key; empty: the embedded server's own, or on an external endpoint Hadoop's "
        "default AWS credential chain (AWS_ACCESS_KEY_ID, instance profile...)",
        "",
        secret=True,
    )
    s3_secret_key: str = _env("S3 secret key (see s3_access_key)", "", secret=True)
    s3_region: str = _env("S3 region the client signs for", "us-east-1")
    s3_path_style_access: bool = _env(
        "Address buckets as <endpoint>/<bucket> (SeaweedFS, most S3-compatible servers) instead "
        "of <bucket>.<endpoint>",
        True,
    )
    s3_port: int = _env("S3 port of the embedded SeaweedFS", 18333)
    # --- The pipeline's streaming query (pipelines/job.py, `cryptoflow run`, `cryptoflow up`)
    starting_offsets: str = _env(
        "Where the pipeline's query starts on a fresh checkpoint: earliest, latest or Spark's "
        "JSON offsets",
        "earliest",
    )
    fail_on_data_loss: bool = _env(
        "Stop the pipeline when Kafka deleted offsets it has not read yet (retention) instead of "
        "silently skipping them",
        True,
    )
    kafka_fetch_max_wait_ms: int = _env(
        "fetch.max.wait.ms of the pipeline's Kafka consumers: how long the broker holds a fetch "
        "that finds no new record. A consumer's next read waits for that fetch, once per "
        "topic-partition of a micro-batch, so it is short",
        10,
    )
    max_offsets_per_trigger: int = _env(
        "Most Kafka records per micro-batch (0: none): bounds the driver memory a batch "
        "collects into",
        200_000,
    )
    max_files_per_trigger: int = _env("Most bronze files per batch of a rebuild (replay)", 1000)
    max_bytes_per_trigger: int = _env(
        "Bronze bytes per batch of a rebuild (replay; soft cap, at least one file): bounds the "
        "driver memory a batch collects into",
        16 * 1024 * 1024,
    )
    trigger_interval_ms: int = _env("Micro-batch interval of the pipeline's query", 500)
    small_batch_rows: int = _env(
        "In the driver placement, a micro-batch after one of fewer Kafka records than this runs "
        "as a small one: Spark's row projections interpreted (generating their code per task "
        "costs a small batch more than it saves) and each Delta append in one task and file "
        "(0: never)",
        5_000,
    )
    gold_sync_interval_ms: int = _env(
        "How often Delta gold copies the windows the batches folded (a MERGE; PostgreSQL "
        "metrics is up to date with every batch)",
        10_000,
    )
    mirror_retry_seconds: int = _env(
        "How long a batch retries an unreachable PostgreSQL before its query fails (a restart "
        "then resumes from the checkpoint)",
        60,
    )
    delta_checkpoint_every: int = _env(
        "Commits between two Delta log checkpoints of a streaming table, written by a thread "
        "of the Spark application beside the micro-batches (pipelines/log_checkpoints.py)",
        100,
    )
    run_status_interval_s: int = _env("Seconds between `cryptoflow run` status lines", 5)
    # --- Source
    symbols: list[str] = _env(
        "Symbols to stream, comma separated", ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
    )
    source: str = _env("Trade source: binance, sim or csv", "binance")
    streams: str = _env(
        "Binance stream kinds to ingest and process, comma separated (trade is always on: "
        "gold and reconciliation come from it); see cryptoflow/core/streams.py",
        ",".join(DEFAULT_STREAMS),
    )
    binance_time_unit: str = _env(
        "Time unit asked of Binance (timeUnit on WebSocket and REST): MILLISECOND or "
        "MICROSECOND. Times are kept at the precision the source gives",
        "MILLISECOND",
    )
    binance_endpoint: str = _env("Binance endpoint: binance, vision, us or testnet", "binance")
    binance_ws_url: str = _env("WebSocket base URL; overrides binance_endpoint", "")
    binance_rest_url: str = _env("REST base URL; overrides binance_endpoint", "")
    sim_host: str = _env("Host the simulator binds", "127.0.0.1")
    sim_port: int = _env("Port of the simulator", 18765)
    # --- Ingestion (WebSocket client, producer, gaps/backfill, CSV replay)
    ws_backoff_initial_ms: int = _env("First reconnect delay; doubles per failure (jittered)", 500)
    ws_backoff_max_ms: int = _env("Longest reconnect delay", 30_000)
    ws_rotate_after_s: int = _env(
        "Open a fresh connection after this long (Binance cuts at 24 h)", 23 * 3600
    )
    ws_rotate_overlap_s: int = _env(
        "Keep the old connection this long after the new one delivers (no missed frames)", 5
    )
    ws_stall_timeout_s: int = _env("Reconnect when no frame arrived for this long", 60)
    ws_max_messages_per_s: int = _env(
        "Most messages the client sends per second (Binance disconnects above 5)", 5
    )
    producer_buffer_messages: int = _env(
        "Frames held in the producer while Kafka is slow or down; the reader waits when full",
        500_000,
    )
    producer_linger_ms: int = _env("Producer batching delay (linger.ms)", 20)
    producer_compression: str = _env("Producer compression: lz4, zstd, snappy, gzip, none", "lz4")
    status_interval_s: int = _env("Seconds between ingestion status lines", 5)
    rest_weight_per_minute: int = _env(
        "REST request-weight budget per minute (Binance allows 6000 per IP)", 5000
    )
    rest_historical_trades_weight: int = _env("Weight of one historicalTrades request", 25)
    gaps_topic: str = _env("Topic recording gap outcomes; default <kafka_topic_prefix>.gaps", "")
    gap_probe_idle_s: int = _env(
        "Ask REST for newer trades of a symbol quiet this long (finds gaps at a feed's end)", 30
    )
    resume_scan_messages: int = _env(
        "How far back (messages per partition) ingestion looks for the last trade ids on start",
        200_000,
    )
    # --- Gold
    window_seconds: int = _env("Length of the short metrics window", 5)
    watermark_seconds: int = _env(
        "Event-time watermark: trades older than the newest seen minus this are counted late "
        "(and still folded into their windows)",
        10,
    )
    candle_intervals: str = _env(
        "Candle intervals gold folds from trades, comma separated (s, m, h units)", "1s,1m,5m,1h"
    )
    log_level: str = _env("Log level of cryptoflow's own loggers", "INFO")
    # --- Data quality (expectations/, `cryptoflow validate`, `cryptoflow dq`)
    dq_interval_minutes: int = _env(
        "Minutes between off-hot-path validations of silver and gold during `up` (0: never)", 10
    )
    dq_min_trade_time: str = _env("Earliest plausible trade time (UTC ISO date)", "2017-01-01")
    dq_future_tolerance_seconds: int = _env(
        "How far in the future (vs. processing time) a trade time may be before it is dropped", 60
    )
    dq_event_before_trade_ms: int = _env(
        "How far an event time may precede its trade time (clock skew) before it is dropped", 1000
    )
    dq_max_latency_ms: int = _env(
        "Latencies above this (or below 0) are counted as warnings, the row is kept", 60_000
    )
    dq_max_price: int = _env("Prices above this are absurd and dropped", 1_000_000_000)
    dq_max_quantity: int = _env("Quantities above this are absurd and dropped", 1_000_000_000)
    # --- Operations (pipelines/ops: history, query, replay, checkpoints, maintain, status)
    time_travel_retention_hours: int = _env(
        "Time-travel window of the Delta tables: `maintain` never vacuums files younger than "
        "this and sets delta.deletedFileRetentionDuration / delta.logRetentionDuration to it",
        168,
    )
    maintain_retries: int = _env(
        "Attempts of a compaction that lost a race with a concurrent commit before it gives up",
        5,
    )
    serving_retention_days: int = _env(
        "Days of raw_trades and metrics PostgreSQL keeps: `maintain` drops the day partitions "
        "wholly older than this (the lake keeps everything; `replay serving --day` refills a "
        "day). 0: keep every day, right for a replay of old CSV files",
        0,
    )
    status_refresh_seconds: int = _env("Seconds between refreshes of `cryptoflow status`", 3)
    status_batches: int = _env("Recent micro-batches per job shown by `cryptoflow status`", 5)
    # --- Dashboard (`cryptoflow dashboard`, the built-in live page)
    dashboard_host: str = _env("Interface the live page binds (loopback by default)", "127.0.0.1")
    dashboard_port: int = _env("Port of the live page", 8050)
    dashboard_refresh_seconds: int = _env("How often the live page polls for new data", 2)
    dashboard_minutes: int = _env("How many minutes of history the live page shows", 15)

    # ----- derived values
    @property
    def embedded_kafka(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def embedded_postgres(self) -> bool:
        return not self.postgres_dsn

    @property
    def bootstrap_servers(self) -> str:
        """The external cluster's bootstrap servers, or every embedded broker."""
        return self.kafka_bootstrap_servers or ",".join(
            f"127.0.0.1:{port}" for port in self.kafka_broker_ports
        )

    @property
    def kafka_broker_ports(self) -> list[int]:
        """Client port of each embedded broker (node 1, 2, ...): kafka_port + 2(n-1)."""
        return [self.kafka_port + 2 * n for n in range(self.kafka_brokers)]

    @property
    def kafka_controller_ports(self) -> list[int]:
        """Controller port of each embedded broker: kafka_controller_port + 2(n-1)."""
        return [self.kafka_controller_port + 2 * n for n in range(self.kafka_brokers)]

    @property
    def batch_in_executors(self) -> bool:
        """True when a batch's per-row work runs in executor tasks (``batch_placement``)."""
        if self.batch_placement == "auto":
            return not self.spark_master_url.startswith("local")
        return self.batch_placement == "executors"

    @property
    def spark_master_url(self) -> str:
        """The master the jobs use: the local cluster's (spark_workers > 0), else spark_master."""
        if self.spark_workers > 0:
            return f"spark://127.0.0.1:{self.spark_master_port}"
        return self.spark_master

    @property
    def s3a_roots(self) -> list[str]:
        """The lake and checkpoint roots that are ``s3a://`` URIs."""
        return [r for r in (self.lake_root, self.checkpoint_root) if is_s3a(r)]

    @property
    def embedded_s3(self) -> bool:
        """True when an s3a:// root is configured and no external endpoint: the embedded
        SeaweedFS serves it."""
        return bool(self.s3a_roots) and not self.s3_endpoint

    @property
    def s3_url(self) -> str:
        """The S3 endpoint the s3a:// roots are reached at: external, or the embedded one."""
        return self.s3_endpoint or f"http://127.0.0.1:{self.s3_port}"

    @property
    def lake(self) -> str:
        return self.lake_root or str((self.data_dir / "lake").resolve())

    @property
    def checkpoints(self) -> str:
        return self.checkpoint_root or str((self.data_dir / "checkpoints").resolve())

    @property
    def stream_kinds(self) -> list[StreamKind]:
        """The stream kinds chosen by ``streams``, in registry order (trade always first)."""
        return kinds([n.strip() for n in self.streams.split(",") if n.strip()])

    def topic(self, kind: StreamKind) -> str:
        """The Kafka topic of ``kind``'s raw frames."""
        return topic_name(self.kafka_topic_prefix, kind)

    @property
    def kafka_topic(self) -> str:
        """The topic of raw ``@trade`` frames."""
        return self.topic(TRADE)

    @property
    def topics(self) -> list[str]:
        """The topics of every chosen stream kind, in registry order."""
        return [self.topic(k) for k in self.stream_kinds]

    def table_path(self, name: str) -> str:
        """Path (or URI) of the Delta table ``name`` (bronze, silver, quarantine, gold...)."""
        return f"{self.lake.rstrip('/')}/{name}"

    def checkpoint_path(self, job: str) -> str:
        return f"{self.checkpoints.rstrip('/')}/{job}"

    @property
    def ws_url(self) -> str:
        if self.binance_ws_url:
            return self.binance_ws_url
        if self.source == "sim":
            return f"ws://{self.sim_host}:{self.sim_port}"
        return BINANCE_ENDPOINTS[self.binance_endpoint][0]

    @property
    def rest_url(self) -> str:
        if self.binance_rest_url:
            return self.binance_rest_url
        if self.source == "sim":
            return f"http://{self.sim_host}:{self.sim_port}"
        return BINANCE_ENDPOINTS[self.binance_endpoint][1]

    def to_env(self) -> dict[str, str]:
        """Every setting as ``CRYPTOFLOW_*`` variables, for child processes of this one."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            text = ",".join(value) if isinstance(value, list) else str(value)
            env[PREFIX + f.name.upper()] = text
        return env

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def as_public_dict(self) -> dict[str, Any]:
        """The resolved configuration for ``cryptoflow config``, secrets masked (the DSNs
        of the embedded logins are the services' to resolve: ``cryptoflow config`` adds them)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret"):
                value = mask_dsn(value) if f.name.endswith("dsn") else ("***" if value else "")
            out[f.name] = str(value) if isinstance(value, Path) else value
        out["resolved"] = {
            "kafka": {
                "embedded": self.embedded_kafka,
                "bootstrap_servers": self.bootstrap_servers,
                "topics": self.topics,
            },
            "postgres": {"embedded": self.embedded_postgres},
            "s3": {"embedded": self.embedded_s3, "endpoint": self.s3_url if self.s3a_roots else ""},
            "spark_master": self.spark_master_url,
            "lake_root": self.lake,
            "tables": {t: self.table_path(t) for t in TABLES},
            "checkpoint_root": self.checkpoints,
            "symbols": self.symbols,
            "streams": [k.name for k in self.stream_kinds],
            "source": self.source,
            "websocket_url": self.ws_url,
            "rest_url": self.rest_url,
        }
        return out


#: The Delta tables of the lake, by name (``table_path``): each stream kind's silver table
#: (trades are ``silver``) and gold's candles and reconciliation beside the pipeline's own.
TABLES = ("bronze", "silver", "quarantine", "gold", *(k.entity.lake for k in KINDS.values()
          if k is not TRADE), "candles", "reconciliation")  # fmt: skip


def is_s3a(uri: str) -> bool:
    """True for an ``s3a://bucket/...`` URI (Hadoop's S3A connector)."""
    return uri.startswith("s3a://")


def s3a_bucket(uri: str) -> str:
    """The bucket of an ``s3a://bucket/...`` URI."""
    return urlsplit(uri).netloc


def mask_dsn(dsn: str) -> str:
    """Replace the password of a URI or key=value DSN with ``***``."""
    if not dsn:
        return dsn
    if "://" in dsn:
        parts = urlsplit(dsn)
        if parts.password is None:
            return dsn
        user = quote(parts.username or "", safe="")
        host = parts.hostname or ""
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return " ".join(
        "password=***" if tok.lower().startswith("password=") else tok for tok in dsn.split()
    )


def _parse(name: str, raw: str, kind: object) -> Any:
    """Convert an environment string to the field's type (``kind`` is the annotation text:
    ``dataclasses.Field.type`` is a string under ``from __future__ import annotations``)."""
    text = raw.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "bool":
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if kind == "Path":
            return Path(text).expanduser()
        if kind == "list[str]":
            return [s.strip().upper() for s in text.split(",") if s.strip()]
    except ValueError as e:
        raise ConfigError(f"{PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from e
    return text


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file of ``KEY=VALUE`` lines (``#`` comments, optional quotes)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:]
        key, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"{path}:{lineno}: expected KEY=VALUE, got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load_settings(
    environ: dict[str, str] | None = None, dotenv: Path | None = Path(".env"), **overrides: Any
) -> Settings:
    """Read ``CRYPTOFLOW_*`` variables (process environment wins over ``.env``)."""
    env = dict(read_dotenv(dotenv)) if dotenv else {}
    env.update(os.environ if environ is None else environ)
    known = {f.name: f for f in fields(Settings)}
    kwargs: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :].lower()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {PREFIX}{close[0].upper()}?)" if close else ""
            raise ConfigError(f"unknown setting {key}{hint}")
        kwargs[name] = _parse(name, raw, known[name].type)
    kwargs.update(overrides)
    settings = Settings(**kwargs)
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    """Check values that can be wrong independently of any service."""
    if s.source not in SOURCES:
        raise ConfigError(f"CRYPTOFLOW_SOURCE={s.source!r}: expected one of {', '.join(SOURCES)}")
    if s.binance_endpoint not in BINANCE_ENDPOINTS:
        raise ConfigError(
            f"CRYPTOFLOW_BINANCE_ENDPOINT={s.binance_endpoint!r}: expected one of "
            + ", ".join(BINANCE_ENDPOINTS)
        )
    if not s.symbols:
        raise ConfigError("CRYPTOFLOW_SYMBOLS is empty: name at least one symbol, e.g. BTCUSDT")
    for sym in s.symbols:
        if not sym.isalnum():
            raise ConfigError(f"CRYPTOFLOW_SYMBOLS: {sym!r} is not a Binance symbol like BTCUSDT")
    for name in ("window_seconds", "kafka_partitions", "spark_shuffle_partitions",
                 "delta_checkpoint_every"):  # fmt: skip
        if getattr(s, name) < 1:
            raise ConfigError(f"{PREFIX}{name.upper()} must be at least 1")
    _validate_spark_cluster(s)
    _validate_object_store(s)
    _validate_kafka_brokers(s)
    s.stream_kinds  # noqa: B018 - raises ConfigError naming an unknown kind
    if s.binance_time_unit not in TIME_UNITS:
        raise ConfigError(
            f"CRYPTOFLOW_BINANCE_TIME_UNIT={s.binance_time_unit!r}: expected one of "
            + ", ".join(TIME_UNITS)
        )
    for name in ("watermark_seconds", "small_batch_rows"):
        if getattr(s, name) < 0:
            raise ConfigError(f"{PREFIX}{name.upper()} must not be negative")
    if s.batch_placement not in BATCH_PLACEMENTS:
        raise ConfigError(
            f"CRYPTOFLOW_BATCH_PLACEMENT={s.batch_placement!r}: expected one of "
            + ", ".join(BATCH_PLACEMENTS)
        )


def _validate_spark_cluster(s: Settings) -> None:
    """A local cluster (spark_workers) and another master are two answers to one question."""
    if s.spark_workers < 0 or s.spark_executor_cores < 1:
        raise ConfigError(
            "CRYPTOFLOW_SPARK_WORKERS must not be negative, CRYPTOFLOW_SPARK_EXECUTOR_CORES at "
            "least 1"
        )
    if s.spark_workers and not s.spark_master.startswith("local"):
        raise ConfigError(
            f"CRYPTOFLOW_SPARK_WORKERS={s.spark_workers} starts a local cluster and runs the jobs "
            f"on it, but CRYPTOFLOW_SPARK_MASTER={s.spark_master} names another master: set one"
        )


def _validate_object_store(s: Settings) -> None:
    """Object-store roots: s3a:// with a bucket (Hadoop has no s3:// file system)."""
    for name in ("lake_root", "checkpoint_root"):
        root = getattr(s, name)
        scheme = urlsplit(root).scheme if "://" in root else ""
        if scheme in ("s3", "s3n"):
            raise ConfigError(
                f"{PREFIX}{name.upper()}={root!r}: Spark reaches S3 through Hadoop's S3A "
                f"connector: write s3a://{root.split('://', 1)[1]}"
            )
        if is_s3a(root) and not s3a_bucket(root):
            raise ConfigError(f"{PREFIX}{name.upper()}={root!r}: expected s3a://<bucket>/<path>")


#: Most embedded brokers: each is a JVM and a controller voter on this one machine.
MAX_KAFKA_BROKERS = 9


def _validate_kafka_brokers(s: Settings) -> None:
    """The embedded brokers' count, and ports that neither collide nor run past 65535."""
    if not 1 <= s.kafka_brokers <= MAX_KAFKA_BROKERS:
        raise ConfigError(
            f"CRYPTOFLOW_KAFKA_BROKERS={s.kafka_brokers}: expected 1 to {MAX_KAFKA_BROKERS} "
            "(3 for a replicated cluster)"
        )
    ports = s.kafka_broker_ports + s.kafka_controller_ports
    if len(set(ports)) < len(ports) or max(ports) > 65535:
        raise ConfigError(
            f"CRYPTOFLOW_KAFKA_PORT={s.kafka_port} and CRYPTOFLOW_KAFKA_CONTROLLER_PORT="
            f"{s.kafka_controller_port}: {s.kafka_brokers} brokers need the ports port + 2(n-1) "
            "and controller port + 2(n-1), all different and at most 65535 (e.g. 19092 and 19093)"
        )


def settings_help() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting, for docs and ``--help``."""
    rows = []
    for f in fields(Settings):
        default: object = f.default
        if callable(f.default_factory):  # not dataclasses.MISSING
            default = f.default_factory()
        if isinstance(default, list):
            default = ",".join(default)
        rows.append((PREFIX + f.name.upper(), str(default), f.metadata["doc"]))
    return rows
