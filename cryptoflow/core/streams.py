"""The registry of Binance stream kinds: one declarative entry per kind, like a channel map.

Each ``StreamKind`` says everything the stages need to know about one kind of stream:
- ingestion: the stream-name suffix (``btcusdt@aggTrade``), the payload's event name, the
  Kafka topic it goes to, and, where the stream has ids, how they advance (``Continuity``)
  and which REST endpoint fills a gap;
- silver: the payload fields and the column each becomes (``Field``), derived columns (SQL
  over the parsed columns), the key, the id deduplication orders by, the expectation suite,
  and the Delta / PostgreSQL tables with how rows are upserted.

Stages interpret these entries; none of them names a stream kind in code. Adding a kind is
one entry here, one migration (``sql/``), one suite (``expectations/suites/``) and, when
the kind needs behaviour no field can declare, one small module beside its stage. The
README's developer section walks through an example.

Times: Binance sends epoch milliseconds, or microseconds when asked (``timeUnit=MICROSECOND``,
public-data files from 2025 on). A ``time`` field is read as microseconds when its value is at
least ``MICROS_FROM`` (milliseconds reach that in the year 5138), so both units are kept exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptoflow.core.errors import ConfigError

#: A ``time`` value at least this large is in microseconds, below it in milliseconds.
MICROS_FROM = 100_000_000_000_000

#: Spark SQL type of each field kind (``Field.kind``).
SPARK_TYPES = {
    "string": "string",
    "symbol": "string",
    "long": "bigint",
    "bool": "boolean",
    "decimal": "decimal(18,8)",
    "volume": "decimal(28,8)",
    "time": "timestamp",
}


@dataclass(frozen=True)
class Field:
    """One payload field: its JSON key (``"k.o"`` inside the kline object), the silver column
    it becomes and its kind (``SPARK_TYPES``). Decimals arrive as strings and are kept exact;
    a ``time`` is epoch ms or µs (module doc)."""

    key: str
    column: str
    kind: str
    required: bool = True


@dataclass(frozen=True)
class Continuity:
    """How a stream's ids advance per symbol, so ingestion can tell a gap.

    ``field``: the payload key of the id; ``step``: how much it grows from one record to the
    next (1 for trade and aggregate ids; 60 000 for the open time of 1 m klines, in ms);
    ``backfill``: the REST endpoint that returns the missing records (``None``: gaps are only
    counted, as for book tickers whose update ids jump whenever deeper levels change);
    ``final``: the payload key that must be true for a record to count (closed klines).
    """

    field: str
    step: int = 1
    backfill: str | None = None
    final: str | None = None


@dataclass(frozen=True)
class Entity:
    """Where a stream's validated records go.

    ``table``: the PostgreSQL serving table; ``lake``: the Delta silver table's name under
    the lake root; ``key``: primary key columns (both stores); ``record_id``: a bigint SQL
    expression over silver columns, growing per symbol, that deduplication orders by;
    ``date``: (partition column, timestamp column it is the UTC date of); ``suite``: the
    expectation suite's file stem; ``final``: a boolean column that must be true for a row to
    be final (``None``: every valid row is); rows that are not final update a live row in
    PostgreSQL and stay out of silver; ``derived``: extra columns as SQL over the parsed ones.
    """

    table: str
    lake: str
    key: tuple[str, ...]
    record_id: str
    date: tuple[str, str]
    suite: str
    final: str | None = None
    derived: tuple[tuple[str, str, str], ...] = ()  # (column, Spark SQL type, expression)


@dataclass(frozen=True)
class StreamKind:
    """One Binance stream kind (module doc). ``name`` is the stream-name suffix and the item
    of ``CRYPTOFLOW_STREAMS``; ``event`` the payload's ``e`` (``None``: the payload has no
    ``e``, as ``@bookTicker``); ``topic`` the middle of its Kafka topic's name."""

    name: str
    event: str | None
    topic: str
    fields: tuple[Field, ...]
    entity: Entity
    continuity: Continuity | None = None
    nested: str | None = None  # the payload key holding the fields (``k`` for klines)
    doc: str = ""

    def stream(self, symbol: str) -> str:
        """The stream name of ``symbol``: ``btcusdt@aggTrade``."""
        return f"{symbol.lower()}@{self.name}"

    @property
    def columns(self) -> tuple[str, ...]:
        """Silver columns: the parsed fields, the receive and processing times, the derived
        columns, where the record came from, and the date partition column last."""
        return (
            *(f.column for f in self.fields),
            *TIMES,
            *(d[0] for d in self.entity.derived),
            *ORIGIN,
            self.entity.date[0],
        )

    @property
    def required(self) -> tuple[str, ...]:
        """Silver columns that are never NULL (a row without one cannot be stored)."""
        return (*(f.column for f in self.fields if f.required), *TIMES)


#: Every silver row's receive time (Kafka timestamp) and processing time (the batch's).
TIMES = ("ingestion_time", "spark_time")
#: Where every silver row came from: the source header and its Kafka position.
ORIGIN = ("source", "kafka_partition", "kafka_offset")

_LATENCIES = (
    ("exchange_latency_ms", "bigint", "unix_millis(ingestion_time) - unix_millis(event_time)"),
    ("source_latency_ms", "bigint", "unix_millis(ingestion_time) - unix_millis(trade_time)"),
    ("end_to_end_latency_ms", "bigint", "unix_millis(spark_time) - unix_millis(trade_time)"),
)

TRADE = StreamKind(
    name="trade",
    event="trade",
    topic="trades",
    fields=(
        Field("s", "symbol", "symbol"),
        Field("t", "trade_id", "long"),
        Field("p", "price", "decimal"),
        Field("q", "quantity", "decimal"),
        Field("m", "is_buyer_maker", "bool"),
        Field("E", "event_time", "time"),
        Field("T", "trade_time", "time"),
    ),
    entity=Entity(
        table="raw_trades",
        lake="silver",
        key=("symbol", "trade_id"),
        record_id="trade_id",
        date=("trade_date", "trade_time"),
        suite="silver_trades",
        derived=_LATENCIES,
    ),
    continuity=Continuity("t", 1, "historicalTrades"),
    doc="docs/streams/trade.md",
)

AGG_TRADE = StreamKind(
    name="aggTrade",
    event="aggTrade",
    topic="aggtrades",
    fields=(
        Field("s", "symbol", "symbol"),
        Field("a", "agg_trade_id", "long"),
        Field("p", "price", "decimal"),
        Field("q", "quantity", "decimal"),
        Field("f", "first_trade_id", "long"),
        Field("l", "last_trade_id", "long"),
        Field("m", "is_buyer_maker", "bool"),
        Field("E", "event_time", "time"),
        Field("T", "trade_time", "time"),
    ),
    entity=Entity(
        table="agg_trades",
        lake="agg_trades",
        key=("symbol", "agg_trade_id"),
        record_id="agg_trade_id",
        date=("trade_date", "trade_time"),
        suite="silver_agg_trades",
    ),
    continuity=Continuity("a", 1, "aggTrades"),
    doc="docs/streams/aggTrade.md",
)

KLINE_1M = StreamKind(
    name="kline_1m",
    event="kline",
    topic="klines",
    nested="k",
    fields=(
        Field("s", "symbol", "symbol"),
        Field("k.i", "interval", "string"),
        Field("k.t", "open_time", "time"),
        Field("k.T", "close_time", "time"),
        Field("k.o", "open", "decimal"),
        Field("k.h", "high", "decimal"),
        Field("k.l", "low", "decimal"),
        Field("k.c", "close", "decimal"),
        Field("k.v", "volume", "volume"),
        Field("k.q", "quote_volume", "volume"),
        Field("k.n", "trades", "long"),
        Field("k.V", "taker_buy_volume", "volume"),
        Field("k.Q", "taker_buy_quote_volume", "volume"),
        Field("k.f", "first_trade_id", "long"),
        Field("k.L", "last_trade_id", "long"),
        Field("k.x", "is_closed", "bool"),
        Field("E", "event_time", "time"),
    ),
    entity=Entity(
        table="exchange_klines",
        lake="exchange_klines",
        key=("symbol", "interval", "open_time"),
        record_id="unix_millis(open_time)",
        date=("open_date", "open_time"),
        suite="silver_klines",
        final="is_closed",
    ),
    continuity=Continuity("k.t", 60_000, "klines", final="k.x"),
    doc="docs/streams/kline.md",
)

BOOK_TICKER = StreamKind(
    name="bookTicker",
    event=None,
    topic="bookticker",
    fields=(
        Field("s", "symbol", "symbol"),
        Field("u", "update_id", "long"),
        Field("b", "bid_price", "decimal"),
        Field("B", "bid_quantity", "decimal"),
        Field("a", "ask_price", "decimal"),
        Field("A", "ask_quantity", "decimal"),
    ),
    entity=Entity(
        table="book_ticker",
        lake="book_ticker",
        key=("symbol", "update_id"),
        record_id="update_id",
        date=("receive_date", "ingestion_time"),
        suite="silver_book_ticker",
    ),
    continuity=Continuity("u", 1, None),
    doc="docs/streams/bookTicker.md",
)

#: Every known kind, by name, in the order they are listed and processed.
KINDS: dict[str, StreamKind] = {k.name: k for k in (TRADE, AGG_TRADE, KLINE_1M, BOOK_TICKER)}
DEFAULT_STREAMS = tuple(KINDS)

#: Binance allows this many streams on one connection.
STREAMS_PER_CONNECTION = 1024


def kinds(names: list[str] | tuple[str, ...]) -> list[StreamKind]:
    """The kinds named (``CRYPTOFLOW_STREAMS``), in registry order; an unknown name is a
    ``ConfigError`` listing the known ones. ``trade`` is always included: gold and
    reconciliation are computed from trades."""
    unknown = [n for n in names if n not in KINDS]
    if unknown:
        raise ConfigError(
            f"CRYPTOFLOW_STREAMS: unknown stream kind(s) {', '.join(unknown)}; "
            f"known: {', '.join(KINDS)}"
        )
    wanted = {"trade", *names}
    return [k for k in KINDS.values() if k.name in wanted]


def kind_of_stream(stream: str) -> StreamKind | None:
    """The kind of a combined-stream name (``btcusdt@kline_1m``), None when unknown."""
    _, _, suffix = stream.partition("@")
    return KINDS.get(suffix)


def topic_name(prefix: str, kind: StreamKind) -> str:
    """The Kafka topic of ``kind``'s raw frames: ``<prefix>.<kind.topic>.raw``."""
    return f"{prefix}.{kind.topic}.raw"


@dataclass(frozen=True)
class Subscription:
    """The streams of one combined connection (at most ``STREAMS_PER_CONNECTION``)."""

    streams: tuple[str, ...] = field(default_factory=tuple)


def subscriptions(symbols: list[str], chosen: list[StreamKind]) -> list[Subscription]:
    """All streams of all ``symbols`` and ``chosen`` kinds, in connections of at most
    ``STREAMS_PER_CONNECTION`` streams each (symbol-major, so a symbol's streams share one
    connection where they fit)."""
    names = [k.stream(s) for s in symbols for k in chosen]
    step = STREAMS_PER_CONNECTION
    return [Subscription(tuple(names[i : i + step])) for i in range(0, len(names), step)]
