"""CSV replay of Binance public-data files (trades, aggTrades, 1m klines) into the real Kafka
broker, read back from the topics."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest

from cryptoflow.core.streams import AGG_TRADE, KLINE_1M
from ingestion.frames import INVALID_HEADER
from ingestion.runner import run_ingestion
from tests.ingest_helpers import read_topic, trade_ids, write_trade_file

pytestmark = pytest.mark.integration


def _rows(first_id: int, n: int, t0: int, step: int) -> list[tuple]:
    return [
        (
            first_id + i,
            f"9000{i % 10}.1234",
            "0.00100000",
            "90.0",
            t0 + i * step,
            "True" if i % 2 else "False",
            "True",
        )
        for i in range(n)
    ]


def test_csv_replay_ms_zip_and_us_csv_with_malformed_lines(settings, unique, tmp_path):
    s = settings.replace(kafka_topic_prefix=f"csv-{unique}", source="csv", status_interval_s=1)
    ms_zip = write_trade_file(  # 2024 file: milliseconds, no header
        tmp_path / "BTCUSDT-trades-2024-12-31.zip", _rows(1000, 300, 1735603200000, 7)
    )
    us_csv = write_trade_file(  # 2025 file: microseconds, with header, two bad lines
        tmp_path / "ETHUSDT-trades-2025-01-02.csv",
        _rows(5000, 200, 1735776000000123, 3500),
        header=True,
        extra_lines=["5200,abc,1,1,1735776000900000,True,True", "not,a,trade"],
    )
    before = int(time.time() * 1000)
    stats = run_ingestion(s, csv_paths=[ms_zip, us_csv])
    records = read_topic(s, s.kafka_topic)

    assert sorted(trade_ids(records)) == [("BTCUSDT", 1000 + i) for i in range(300)] + [
        ("ETHUSDT", 5000 + i) for i in range(200)
    ]
    assert stats.frames == 502 and stats.invalid == 2 and stats.delivered == 502
    assert all(r.headers["source"] == b"csv" and r.timestamp_ms >= before for r in records)
    btc = next(json.loads(r.value) for r in records if r.key == b"BTCUSDT")
    assert btc["stream"] == "btcusdt@trade" and btc["data"]["T"] == 1735603200000
    eth = {r.trade()["t"]: r.trade() for r in records if r.key == b"ETHUSDT" and r.trade()}
    assert eth[5001]["T"] == 1735776000000123 + 3500  # µs kept as the file gives them
    assert b'"T":1735776000003623,' in next(
        r.value for r in records if r.trade() and r.trade()["t"] == 5001
    )
    assert eth[5001]["m"] is True and eth[5000]["m"] is False
    assert eth[5000]["p"] == "90000.1234"  # the exact decimal string of the file
    bad = sorted((r.invalid, r.value) for r in records if r.invalid)
    assert bad == [
        ("malformed CSV line: 3 columns, expected 7", b"not,a,trade"),
        (
            "malformed CSV line: price/qty is not a decimal",
            b"5200,abc,1,1,1735776000900000,True,True",
        ),
    ]
    assert {r.key for r in records if r.invalid} == {b"ETHUSDT"}


def test_csv_replay_paces_by_trade_time(settings, unique, tmp_path):
    s = settings.replace(kafka_topic_prefix=f"csvpace-{unique}", source="csv")
    f = write_trade_file(  # 2 s of trades replayed at 4x: about 0.5 s
        tmp_path / "BNBUSDT-trades-2024-06-01.csv", _rows(1, 21, 1717200000000, 100)
    )
    started = time.monotonic()
    run_ingestion(s, csv_paths=[f], speed=4)
    elapsed = time.monotonic() - started
    records = read_topic(s, s.kafka_topic)
    assert len(trade_ids(records)) == 21
    spread = max(r.timestamp_ms for r in records) - min(r.timestamp_ms for r in records)
    assert 400 <= spread <= 2000, spread
    assert elapsed >= 0.45


def test_csv_replay_rejects_unnamed_files(settings, unique, tmp_path):
    s = settings.replace(kafka_topic_prefix=f"csvbad-{unique}", source="csv")
    f = write_trade_file(tmp_path / "trades.csv", _rows(1, 2, 1717200000000, 1))
    with pytest.raises(Exception, match="SYMBOL-trades-YYYY-MM-DD"):
        run_ingestion(s, csv_paths=[f])


def _zip(path: Path, lines: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(path.with_suffix(".csv").name, "\n".join(lines) + "\n")
    return path


def _agg_rows(n: int, t0: int) -> list[list[str]]:
    """aggTrades rows: id, price, qty, first id, last id, time, buyer maker, best match."""
    return [
        [str(700 + i), f"93{i % 10}76.5{i % 3}", f"0.00{i + 1:03d}", str(9000 + 2 * i),
         str(9001 + 2 * i), str(t0 + 1733 * i), "True" if i % 3 else "False", "True"]
        for i in range(n)
    ]  # fmt: skip


def _kline_rows(n: int, t0: int, unit: int) -> list[list[str]]:
    """1m klines rows; ``unit`` is 1 for ms, 1000 for µs."""
    return [
        [str(t0 + i * 60_000 * unit), "4.15070000", "4.15870000", "4.15060000",
         f"4.1554{i % 10}000", f"{539 + i}.23000000", str(t0 + (i + 1) * 60_000 * unit - 1),
         "2240.39860900", str(13 + i), "401.82000000", "1669.98121300", "0"]
        for i in range(n)
    ]  # fmt: skip


def _agg_frame(sym: str, r: list[str]) -> bytes:
    """The frame Binance's @aggTrade stream sends for row ``r``, written out by hand."""
    m, best = r[6].lower(), r[7].lower()
    return (
        f'{{"stream":"{sym.lower()}@aggTrade","data":{{"e":"aggTrade","E":{r[5]},"s":"{sym}",'
        f'"a":{r[0]},"p":"{r[1]}","q":"{r[2]}","f":{r[3]},"l":{r[4]},"T":{r[5]},'
        f'"m":{m},"M":{best}}}}}'
    ).encode()


def _kline_frame(sym: str, r: list[str]) -> bytes:
    """The frame Binance's @kline_1m stream sends when the kline of row ``r`` closes."""
    return (
        f'{{"stream":"{sym.lower()}@kline_1m","data":{{"e":"kline","E":{r[6]},"s":"{sym}",'
        f'"k":{{"t":{r[0]},"T":{r[6]},"s":"{sym}","i":"1m","f":-1,"L":-1,"o":"{r[1]}",'
        f'"c":"{r[4]}","h":"{r[2]}","l":"{r[3]}","v":"{r[5]}","n":{r[8]},"x":true,'
        f'"q":"{r[7]}","V":"{r[9]}","Q":"{r[10]}","B":"0"}}}}}}'
    ).encode()


def test_csv_replay_agg_trades_and_klines_byte_for_byte(settings, unique, tmp_path):
    s = settings.replace(kafka_topic_prefix=f"csvkinds-{unique}", source="csv")
    header = (
        "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
        "is_buyer_maker,is_best_match"
    )
    agg = _agg_rows(120, 1735689600010866)  # 2025: microseconds, with a header
    bad_agg = "820,93000.1,0.5,9300,9299,1735689700000000,maybe,True"
    agg_zip = _zip(
        tmp_path / "BTCUSDT-aggTrades-2025-01-01.zip",
        [header, *(",".join(r) for r in agg[:60]), bad_agg, *(",".join(r) for r in agg[60:])],
    )
    klines_ms = _kline_rows(30, 1735603200000, 1)  # 2024: milliseconds, no header
    klines_us = _kline_rows(20, 1735689600000000, 1000)  # 2025: microseconds, no header
    ms_zip = _zip(
        tmp_path / "ETHUSDT-1m-2024-12-31.zip", [*(",".join(r) for r in klines_ms), "1,2,3"]
    )
    us_zip = _zip(tmp_path / "ETHUSDT-1m-2025-01-01.zip", [",".join(r) for r in klines_us])
    before = int(time.time() * 1000)

    stats = run_ingestion(s, csv_paths=[agg_zip, ms_zip, us_zip])

    agg_records = read_topic(s, s.topic(AGG_TRADE))
    kline_records = read_topic(s, s.topic(KLINE_1M))
    assert [r.value for r in agg_records] == [
        *(_agg_frame("BTCUSDT", r) for r in agg[:60]),
        bad_agg.encode(),
        *(_agg_frame("BTCUSDT", r) for r in agg[60:]),
    ]  # one key, so one partition, in file order
    assert [r.value for r in kline_records] == [
        *(_kline_frame("ETHUSDT", r) for r in klines_ms),
        b"1,2,3",
        *(_kline_frame("ETHUSDT", r) for r in klines_us),
    ]
    assert {r.key for r in agg_records} == {b"BTCUSDT"}
    assert {r.key for r in kline_records} == {b"ETHUSDT"}
    flagged = [(r.value, r.invalid) for r in agg_records + kline_records if r.invalid]
    assert flagged == [
        (bad_agg.encode(), "malformed CSV line: is_buyer_maker/is_best_match is not true/false"),
        (b"1,2,3", "malformed CSV line: 3 columns, expected 12"),
    ]
    assert all(INVALID_HEADER not in r.headers for r in agg_records if r.value != bad_agg.encode())
    assert all(
        r.headers["source"] == b"csv" and r.timestamp_ms >= before
        for r in agg_records + kline_records
    )
    assert {r.headers["connection"] for r in kline_records} == {
        b"ETHUSDT-1m-2024-12-31.zip",
        b"ETHUSDT-1m-2025-01-01.zip",
    }
    assert b'"T":1735689600010866,' in agg_records[0].value  # µs, as in the file
    assert json.loads(kline_records[0].value)["data"]["k"]["t"] == 1735603200000  # ms stays ms
    assert stats.frames == 172 and stats.invalid == 2 and stats.delivered == 172
    assert read_topic(s, s.kafka_topic) == []  # nothing went to the trade topic


def test_csv_replay_skips_kinds_not_streamed(settings, unique, tmp_path):
    s = settings.replace(kafka_topic_prefix=f"csvskip-{unique}", source="csv", streams="trade")
    klines = _zip(
        tmp_path / "BNBUSDT-1m-2024-06-01.zip",
        [",".join(r) for r in _kline_rows(3, 1717200000000, 1)],
    )
    trades = write_trade_file(
        tmp_path / "BNBUSDT-trades-2024-06-01.zip", _rows(1, 5, 1717200000000, 10)
    )
    stats = run_ingestion(s, csv_paths=[klines, trades])
    assert sorted(trade_ids(read_topic(s, s.kafka_topic))) == [("BNBUSDT", i) for i in range(1, 6)]
    assert stats.frames == 5
