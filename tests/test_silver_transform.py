"""Silver's pure transforms on small DataFrames (one local Spark session, no Kafka)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from pyspark.sql import functions as F

from cryptoflow.core.errors import ConfigError
from pipelines.bronze.transform import BRONZE_SCHEMA
from pipelines.serving import copy_value
from pipelines.silver.dedup import KeyIndex, classify, new_keys
from pipelines.silver.transform import SILVER_COLUMNS, parse_frames
from pipelines.silver.validate import UNSTORABLE, apply_rules, check_rules

T_MS = 1_700_000_000_120
KAFKA_TS = datetime(2023, 11, 14, 22, 13, 20, 200000, tzinfo=UTC)  # T + 80 ms
SPARK_TIME = datetime(2023, 11, 14, 22, 13, 21, tzinfo=UTC)  # T + 880 ms


@dataclass(frozen=True)
class Rule:
    name: str
    expression: str
    action: str


def _bronze(spark, values: list[bytes]):
    rows = [
        (v, "K", "t", 0, i, KAFKA_TS, [("source", "simulator")], KAFKA_TS, date(2023, 11, 14))
        for i, v in enumerate(values)
    ]
    return spark.createDataFrame(rows, BRONZE_SCHEMA)


def _payload(t: int, p: str, q: str, extra: str = "") -> bytes:
    return (
        f'{{"e":"trade","E":{T_MS + 3},"s":"BTCUSDT","t":{t},"p":"{p}","q":"{q}",'
        f'"T":{T_MS},"m":true,"M":false{extra}}}'
    ).encode()


def _wrapped(t: int, p: str, q: str) -> bytes:
    return b'{"stream":"btcusdt@trade","data":' + _payload(t, p, q) + b"}"


def test_parse_exact_decimals_times_latencies_and_case_sensitive_fields(spark):
    parsed = parse_frames(
        _bronze(spark, [_wrapped(1, "0.1", "0.2"), _payload(2, "0.2", "0.00000001")]), SPARK_TIME
    )
    assert parsed.columns[:16] == list(SILVER_COLUMNS)
    rows = parsed.orderBy("trade_id").collect()
    a, b = rows
    assert (a.symbol, a.trade_id, a.stream, b.stream) == ("BTCUSDT", 1, "btcusdt@trade", None)
    assert (a.price, a.quantity, b.quantity) == (Decimal("0.1"), Decimal("0.2"), Decimal("1E-8"))
    # m (buyer is maker) and M (best match) differ only by case: m=true, M=false here.
    assert a.is_buyer_maker is True and a.event_type == "trade"
    assert (a.exchange_latency_ms, a.source_latency_ms, a.end_to_end_latency_ms) == (77, 80, 880)
    assert a.trade_date == date(2023, 11, 14) and a.parse_error is None and a.source == "simulator"
    total = parsed.agg(F.sum("price")).first()[0]
    assert total == Decimal("0.3")  # exact, no binary float drift
    assert parsed.schema["price"].dataType.simpleString() == "decimal(18,8)"


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (b"", "empty frame"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b'{"stream":"btcusdt@trade","data":{"e":"trade"', "invalid JSON or not a JSON object"),
        (b"[1,2]", "invalid JSON or not a JSON object"),
        (b'{"stream":"btcusdt@trade"}', "missing field data"),
        (_payload(1, "1", "1").replace(b'"p":"1",', b""), "missing field p"),
        (_payload(1, "1", "1").replace(b'"t":1', b'"t":"x"'), "wrong type for t"),
        (_payload(1, "1.123456789", "1"), "price is not a decimal(18,8)"),
        (_payload(1, "NaN", "1"), "price is not a decimal(18,8)"),
        (_payload(1, "1", "1e30"), "quantity is not a decimal(18,8)"),
    ],
)
def test_parse_errors_name_the_problem(spark, frame, error):
    (row,) = parse_frames(_bronze(spark, [frame]), SPARK_TIME).collect()
    assert row.parse_error == error
    assert row.raw_value == frame


def test_rules_warn_drop_fail_and_unstorable_rows(spark):
    rules = [
        Rule("frame_parses", "parse_error IS NULL", "drop"),
        Rule("price_positive", "price > 0", "drop"),
        Rule("cheap", "price < 100", "warn"),
        Rule("no_big_ids", "trade_id < 1000", "fail"),
    ]
    frames = [_payload(1, "5", "1"), _payload(2, "-1", "1"), _payload(3, "500", "1"),
              _payload(5000, "1", "1"), b"junk"]  # fmt: skip
    out = apply_rules(parse_frames(_bronze(spark, frames), SPARK_TIME), rules)
    got = {r.kafka_offset: (r.failed_expectations, r.dropped, r.fail_rule) for r in out.collect()}
    assert got[0] == ([], False, None)
    assert got[1] == (["price_positive"], True, None)
    assert got[2] == (["cheap"], False, None)
    assert got[3] == (["no_big_ids"], False, "no_big_ids")
    # NULL counts as failed: the junk frame fails every rule, the fail rule included.
    assert got[4] == (["frame_parses", "price_positive", "cheap", "no_big_ids"], True, "no_big_ids")
    # Without any rule, a frame that cannot be stored is still quarantined, never lost.
    (junk,) = apply_rules(parse_frames(_bronze(spark, [b"junk"]), SPARK_TIME), []).collect()
    assert junk.failed_expectations == [UNSTORABLE] and junk.dropped is True


def test_check_rules_rejects_bad_actions_names_and_sql(spark):
    sample = parse_frames(_bronze(spark, []), SPARK_TIME)
    with pytest.raises(ConfigError, match="action 'skip' is not one of"):
        check_rules([Rule("a", "TRUE", "skip")], sample)
    with pytest.raises(ConfigError, match="rule a is defined twice"):
        check_rules([Rule("a", "TRUE", "warn"), Rule("a", "TRUE", "drop")], sample)
    with pytest.raises(ConfigError, match="rule b: expression 'no_such_column > 0' is invalid"):
        check_rules([Rule("b", "no_such_column > 0", "drop")], sample)


@dataclass(frozen=True)
class Rec:
    symbol: str
    record_id: int
    dropped: bool
    kafka_partition: int
    kafka_offset: int


def test_classify_first_record_wins_and_existing_keys_are_duplicates():
    rows = [Rec("BTCUSDT", 11, False, 0, 0), Rec("BTCUSDT", 12, False, 0, 1),
            Rec("BTCUSDT", 11, False, 1, 0), Rec("BTCUSDT", 13, True, 0, 3),
            Rec("BTCUSDT", 13, False, 0, 4), Rec("ETHUSDT", 5, False, 0, 5)]  # fmt: skip
    looked_up = []

    def lookup(keys):
        looked_up.append(keys)
        return keys & {("BTCUSDT", 12)}

    index = KeyIndex(7, {"BTCUSDT": 12})
    got = classify(rows, index, lookup)
    # Offset 3 (dropped) is rejected and does not shadow the valid trade 13 at offset 4;
    # 11 at partition 1 comes after partition 0's; only ids <= 12 are looked up.
    assert got == ["new", "duplicate", "duplicate", "rejected", "new", "new"]
    assert looked_up == [{("BTCUSDT", 11), ("BTCUSDT", 12)}]
    assert new_keys(rows, got) == {"BTCUSDT": 13, "ETHUSDT": 5}
    index.advance(8, new_keys(rows, got).items())
    assert index.version == 8 and index.high == {"BTCUSDT": 13, "ETHUSDT": 5}


def test_classify_reads_nothing_when_every_id_is_above_the_index():
    rows = [Rec("BTCUSDT", i, False, 0, i) for i in range(20, 25)]

    def lookup(keys):
        raise AssertionError(f"unexpected lookup of {keys}")

    assert classify(rows, KeyIndex(3, {"BTCUSDT": 19}), lookup) == ["new"] * 5
    assert classify([], KeyIndex(-1), lookup) == []


def test_copy_values_are_exact_and_escaped():
    assert copy_value(Decimal("90000.01000000")) == "90000.01000000"
    assert copy_value(None) == "\\N" and copy_value(True) == "t"
    assert copy_value(b"\x00\xff") == "\\\\x00ff"
    assert copy_value(["a\tb", 'q"']) == '{"a\\tb","q\\\\""}'
    assert copy_value(datetime(2024, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)) == (
        "2024-01-02T03:04:05.006000+00:00"
    )
