"""Silver transforms: raw frames -> typed rows of their stream kind, as pure DataFrame functions.

The kinds are the registry's (``cryptoflow.core.streams``): each record is parsed as the
kind of its Kafka topic, into that kind's silver columns (``StreamKind.columns``); the
columns of the other kinds are NULL on its row. ``parse_frames`` never drops a row: a frame
that does not parse gets ``parse_error`` and NULLs where fields are missing, so validation
routes it to quarantine with its raw bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cryptoflow.core.streams import MICROS_FROM, SPARK_TYPES, TRADE, StreamKind
from pipelines.batch_values import batch_timestamp
from pipelines.bronze.transform import header_value

_WRAPPER_SCHEMA = "struct<stream:string,data:string>"

#: Silver Delta schema of trades (the contract), in column order; ``trade_date`` partitions.
SILVER_COLUMNS = TRADE.columns
#: Trade columns that can never be NULL (PostgreSQL raw_trades NOT NULL, Delta keys).
REQUIRED_COLUMNS = TRADE.required
#: What ``parse_frames`` adds after the silver columns of every kind.
PARSE_COLUMNS = ("kind", "record_id", "stream", "event_type", "parse_error")
#: The parse error of a record whose topic no chosen stream kind reads.
NO_KIND = "no stream kind reads this topic"
_BRONZE_TAIL = ("raw_value", "kafka_key", "topic", "kafka_timestamp", "headers")


def parsed_columns(kinds: Mapping[str, StreamKind]) -> list[str]:
    """The silver columns of every kind in ``kinds`` (first appearance order: trades' first)."""
    return list(dict.fromkeys(c for k in kinds.values() for c in k.columns))


def column_types(kinds: Mapping[str, StreamKind]) -> dict[str, str]:
    """Spark SQL type of every parsed column; a column two kinds type differently is an error
    in the registry (``ValueError``)."""
    types: dict[str, str] = {}
    for kind in kinds.values():
        own = {f.column: SPARK_TYPES[f.kind] for f in kind.fields}
        own.update({d[0]: d[1] for d in kind.entity.derived})
        own.update(ingestion_time="timestamp", spark_time="timestamp", source="string",
                   kafka_partition="int", kafka_offset="bigint")  # fmt: skip
        own[kind.entity.date[0]] = "date"
        for name, kind_type in own.items():
            if types.setdefault(name, kind_type) != kind_type:
                raise ValueError(
                    f"column {name} is {types[name]} in one kind, {kind_type} in another"
                )
    return types


def _first_error(checks: list[tuple[Column, str]]) -> Column:
    """The message of the first check that is true, NULL when none is."""
    out = F.lit(None).cast("string")
    for cond, message in reversed(checks):
        out = F.when(cond, F.lit(message)).otherwise(out)
    return out


def _decimal(text: Column, spark_type: str) -> tuple[Column, Column]:
    """(exact decimal or NULL, True when the text is not exactly representable)."""
    value = text.try_cast(spark_type)
    wide = text.try_cast("decimal(38,18)")
    return value, text.isNotNull() & (value.isNull() | (wide != value.cast("decimal(38,18)")))


def _time(epoch: Column) -> Column:
    """Epoch ms or µs (``MICROS_FROM``) as a timestamp, exactly."""
    return F.when(epoch >= MICROS_FROM, F.timestamp_micros(epoch)).otherwise(
        F.timestamp_millis(epoch)
    )


def _schemas(kind: StreamKind) -> tuple[str, str]:
    """(every field as text, every field typed) JSON schemas of ``kind``'s payload."""
    loose: dict[str | None, list[str]] = {}
    typed: dict[str | None, list[str]] = {}
    for f in kind.fields:
        parent, _, name = f.key.rpartition(".")
        as_json = {"symbol": "string", "decimal": "string", "volume": "string", "time": "bigint"}
        loose.setdefault(parent or None, []).append(f"{name}:string")
        typed.setdefault(parent or None, []).append(
            f"{name}:{as_json.get(f.kind, SPARK_TYPES[f.kind])}"
        )
    loose.setdefault(None, []).append("e:string")
    typed.setdefault(None, []).append("e:string")

    def render(parts: dict[str | None, list[str]]) -> str:
        top = list(parts[None])
        top += [f"{p}:struct<{','.join(fs)}>" for p, fs in parts.items() if p is not None]
        return f"struct<{','.join(dict.fromkeys(top))}>"

    return render(loose), render(typed)


def _kind_columns(
    kind: StreamKind, loose: str, typed: str, spark_ts: Column
) -> tuple[dict[str, Column], list[tuple[Column, str]]]:
    """``kind``'s silver columns (over the parsed ``loose``/``typed`` structs) and its checks."""
    cols: dict[str, Column] = {}
    checks: list[tuple[Column, str]] = [(F.col(loose).isNull(), "data is not a JSON object")]
    if kind.nested:
        checks.append(
            (F.col(f"{loose}.{kind.nested}").isNull(), f"{kind.nested} is not a JSON object")
        )
    for f in kind.fields:
        text, value = F.col(f"{loose}.{f.key}"), F.col(f"{typed}.{f.key}")
        if f.required:
            checks.append((text.isNull(), f"missing field {f.key}"))
        if f.kind in ("decimal", "volume"):
            value, bad = _decimal(text, SPARK_TYPES[f.kind])
            checks.append((bad, f"{f.column} is not a {SPARK_TYPES[f.kind]}"))
        elif f.kind in ("long", "bool", "time"):
            checks.append((text.isNotNull() & value.isNull(), f"wrong type for {f.key}"))
            if f.kind == "time":
                value = _time(value)
        cols[f.column] = value
    cols["ingestion_time"] = F.col("kafka_timestamp")
    cols["spark_time"] = spark_ts
    return cols, checks


def _late_columns(kind: StreamKind) -> dict[str, Column]:
    """The derived columns, the date partition column and the record id of ``kind``, as
    expressions over its parsed columns."""
    out = {name: F.expr(sql).cast(spark_type) for name, spark_type, sql in kind.entity.derived}
    out[kind.entity.date[0]] = F.to_date(F.col(kind.entity.date[1]))
    out["record_id"] = F.expr(kind.entity.record_id).cast("bigint")
    return out


def _by_kind(
    values: dict[str, dict[str, Column]], kinds: Mapping[str, StreamKind], column: str
) -> Column:
    """``column`` of the row's kind: a CASE over the kinds that have it (NULL for others)."""
    names = [k.name for k in kinds.values() if k.name in values and column in values[k.name]]
    if len(kinds) == 1:
        return values[names[0]][column] if names else F.lit(None)
    out: Column | None = None
    for name in names:
        cond = F.col("kind") == name
        out = (
            F.when(cond, values[name][column])
            if out is None
            else out.when(cond, values[name][column])
        )
    return out if out is not None else F.lit(None)


def parse_frames(
    bronze: DataFrame,
    spark_time: datetime | None = None,
    kinds: Mapping[str, StreamKind] | None = None,
) -> DataFrame:
    """Bronze rows -> silver columns of every kind + ``PARSE_COLUMNS`` + the bronze fields.

    ``kinds`` maps a Kafka topic to the stream kind of its records; a record of a topic not
    in it gets ``kind`` NULL and a parse error. With one kind (the default: trades) every
    record is parsed as that kind, whatever its topic. Accepts the combined-stream wrapper
    ``{"stream":..,"data":{..}}`` or a bare payload.
    ``spark_time`` is the batch's processing time. By default it is ``batch_timestamp()``,
    which a streaming query fixes per micro-batch to the batch's timestamp in its offset log:
    a replayed batch computes identical rows, and the plan is built once per query start
    rather than once per batch. A ``datetime`` makes it a literal (tests). Decimals go from
    their strings straight to their decimal type; text with more digits than that is a parse
    error, never rounded. Times are epoch ms or µs (``_time``).
    """
    kinds = {"*": TRADE} if kinds is None else dict(kinds)
    # One select per step, so each JSON scan runs once per row: written as nested Column
    # expressions, the key scan and the wrapper parse were copied into every branch using
    # them (eight key scans and four wrapper parses per row: 14.8 us a row against 9.2 now,
    # 400k frames on two idle cores). Spark does not merge a select into the next one when
    # that would repeat an expensive expression, so the steps stay separate.
    # The batch time first, in a projection of its own: interpreted (``batch_timestamp``),
    # it keeps the projection it is in out of whole-stage code generation.
    spark_ts = batch_timestamp() if spark_time is None else F.lit(spark_time).cast("timestamp")
    bronze = bronze.select("*", spark_ts.alias("_spark_time"))
    text = bronze["value"].cast("string")
    if len(kinds) == 1:
        kind_of = F.lit(next(iter(kinds.values())).name)
    else:
        kind_of = F.lit(None).cast("string")
        for topic, k in reversed(list(kinds.items())):
            kind_of = F.when(bronze["topic"] == topic, F.lit(k.name)).otherwise(kind_of)
    step1 = bronze.select(
        bronze["value"].alias("raw_value"),
        bronze["key"].alias("kafka_key"),
        bronze["topic"],
        bronze["partition"].alias("kafka_partition"),
        bronze["offset"].alias("kafka_offset"),
        bronze["kafka_timestamp"],
        bronze["headers"],
        header_value(bronze["headers"], "source").alias("source"),
        kind_of.alias("kind"),
        F.is_valid_utf8(text).alias("_utf8"),
        (F.length(bronze["value"]) == 0).alias("_empty"),
        text.alias("_text"),
        F.json_object_keys(text).alias("_keys"),
        F.col("_spark_time"),
    )
    keys = F.col("_keys")
    step2 = step1.select(
        "*",
        keys.isNotNull().alias("_object"),
        F.coalesce(
            F.array_contains(keys, "stream") | F.array_contains(keys, "data"), F.lit(False)
        ).alias("_wrapped"),
        F.from_json(F.col("_text"), _WRAPPER_SCHEMA).alias("_wrapper"),
    )
    wrapped = F.col("_wrapped")
    step3 = step2.select(
        "*",
        F.when(wrapped, F.col("_wrapper.stream")).alias("stream"),
        F.when(wrapped, F.col("_wrapper.data")).alias("_data"),
        F.when(wrapped, F.col("_wrapper.data")).otherwise(F.col("_text")).alias("_payload"),
    )
    structs = []
    for i, k in enumerate(kinds.values()):
        loose, typed = _schemas(k)
        mine = F.col("kind") == k.name
        structs += [
            F.when(mine, F.from_json(F.col("_payload"), loose)).alias(f"_loose{i}"),
            F.when(mine, F.from_json(F.col("_payload"), typed)).alias(f"_typed{i}"),
        ]
    step4 = step3.select("*", *structs)

    spark_ts = F.col("_spark_time")
    common: list[tuple[Column, str]] = [
        (F.col("_empty"), "empty frame"),
        (~F.col("_utf8"), "not UTF-8"),
        (~F.col("_object"), "invalid JSON or not a JSON object"),
        (F.col("_wrapped") & F.col("_data").isNull(), "missing field data"),
    ]
    values: dict[str, dict[str, Column]] = {}
    errors: dict[str, dict[str, Column]] = {}
    event_types: dict[str, dict[str, Column]] = {}
    for i, k in enumerate(kinds.values()):
        cols, checks = _kind_columns(k, f"_loose{i}", f"_typed{i}", spark_ts)
        values[k.name] = cols
        errors[k.name] = {"parse_error": _first_error(common + checks)}
        event_types[k.name] = {"event_type": F.col(f"_typed{i}.e")}
    step5 = step4.select(
        *[c for c in step4.columns if not c.startswith(("_loose", "_typed"))],
        *[_by_kind(values, kinds, c).alias(c) for c in _field_columns(kinds)],
        _by_kind(event_types, kinds, "event_type").alias("event_type"),
        F.when(F.col("kind").isNull(), F.lit(NO_KIND))
        .otherwise(_by_kind(errors, kinds, "parse_error"))
        .alias("parse_error"),
    )
    late = {k.name: _late_columns(k) for k in kinds.values()}
    columns = parsed_columns(kinds)
    types = column_types(kinds)
    done = set(step5.columns)
    return step5.select(
        *[
            (F.col(c) if c in done else _by_kind(late, kinds, c)).cast(types[c]).alias(c)
            for c in columns
        ],
        F.col("kind"),
        _by_kind(late, kinds, "record_id").cast("bigint").alias("record_id"),
        F.col("stream"),
        F.col("event_type"),
        F.col("parse_error"),
        *[F.col(c) for c in _BRONZE_TAIL],
    )


def _field_columns(kinds: Mapping[str, StreamKind]) -> list[str]:
    """Columns parsed from payloads or set from the record (not derived), every kind's."""
    names = [f.column for k in kinds.values() for f in k.fields]
    return list(dict.fromkeys([*names, "ingestion_time", "spark_time"]))


def silver_rows(parsed: DataFrame, kind: StreamKind = TRADE) -> DataFrame:
    """Only ``kind``'s silver columns, in order."""
    return parsed.select(*kind.columns)
