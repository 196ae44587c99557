"""Pure tests of CSV replay for every public-data kind: file names, rows, headers, µs times,
bad rows, and what ``replay`` produces where (a fake producer, no broker)."""

from __future__ import annotations

import json
import threading
import zipfile
from pathlib import Path

import pytest

from cryptoflow.core.config import load_settings
from cryptoflow.core.errors import ConfigError
from cryptoflow.core.streams import AGG_TRADE, KLINE_1M, TRADE
from ingestion import csv_replay
from ingestion.csv_replay import (
    CsvAggTrade,
    CsvKline,
    CsvTrade,
    is_header,
    parse_agg_trade_line,
    parse_kline_line,
    parse_line,
    plan,
    replay,
    replay_file,
)
from ingestion.exchange_frames import agg_trade_frame, kline_frame
from ingestion.frames import INVALID_HEADER, classify
from ingestion.status import IngestStats

AGG_HEADER = (
    "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
    "is_buyer_maker,is_best_match"
)
KLINE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    "taker_buy_quote_volume,ignore"
)
TRADE_HEADER = "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match"
KLINE_US = (
    "1735689600000000,93576.00000000,93610.93000000,93537.50000000,93610.93000000,"
    "8.21827000,1735689659999999,769057.19580660,1832,3.95590000,370195.23087200,0"
)
KLINE_MS = (
    "1601510340000,4.15070000,4.15870000,4.15060000,4.15540000,539.23000000,1601510399999,"
    "2240.39860900,13,401.82000000,1669.98121300,0"
)


def _settings(streams: str = "trade,aggTrade,kline_1m,bookTicker"):
    return load_settings(environ={}, dotenv=None, streams=streams, kafka_topic_prefix="t")


# --- file names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "symbol", "kind"),
    [
        ("BTCUSDT-trades-2025-01-01.zip", "BTCUSDT", TRADE),
        ("ETHUSDT-trades-2024-12-31.csv", "ETHUSDT", TRADE),
        ("BTCUSDT-aggTrades-2025-01-01.zip", "BTCUSDT", AGG_TRADE),
        ("BNBUSDT-aggTrades-2024-06.zip", "BNBUSDT", AGG_TRADE),  # monthly
        ("BTCUSDT-1m-2025-01-01.zip", "BTCUSDT", KLINE_1M),
        ("1000SATSUSDT-1m-2024-05.csv", "1000SATSUSDT", KLINE_1M),
    ],
)
def test_file_kind_and_symbol_come_from_the_name(name, symbol, kind):
    f = replay_file(Path("/data") / name)
    assert (f.symbol, f.kind.kind) == (symbol, kind)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("trades.csv", "SYMBOL-aggTrades-YYYY-MM-DD.zip"),
        ("BTCUSDT-trades-2025-01-01.parquet", "expected a Binance public-data file"),
        ("btcusdt-trades-2025-01-01.zip", "expected a Binance public-data file"),
        ("BTCUSDT-5m-2025-01-01.zip", "unknown public-data kind '5m'.*trades, aggTrades, 1m"),
        ("BTCUSDT-bookTicker-2025-01-01.zip", "unknown public-data kind 'bookTicker'"),
    ],
)
def test_unknown_file_names_are_a_clear_error(name, match):
    with pytest.raises(ConfigError, match=match):
        replay_file(Path(name))


def test_plan_checks_every_name_then_skips_kinds_not_streamed(caplog):
    paths = [Path("BTCUSDT-aggTrades-2025-01-01.zip"), Path("BTCUSDT-1m-2025-01-01.zip")]
    with pytest.raises(ConfigError, match="unknown public-data kind"):
        plan(_settings(), [*paths, Path("BTCUSDT-1h-2025-01-01.zip")])
    caplog.set_level("INFO", logger=csv_replay.__name__)
    kept = plan(_settings("aggTrade"), [*paths, Path("BTCUSDT-trades-2025-01-01.zip")])
    assert [f.kind.tag for f in kept] == ["aggTrades", "trades"]  # trade is always streamed
    assert "skipping BTCUSDT-1m-2025-01-01.zip: stream kind kline_1m" in caplog.text


# --- rows -----------------------------------------------------------------------------------


def test_trades_row_keeps_microseconds_in_the_frame():
    row = parse_line("51175358,17.80180000,5.69000000,101.29224200,1735689600010866,True,True")
    assert isinstance(row, CsvTrade) and row.time == 1735689600010866
    assert row.time_ms == 1735689600010  # pacing only
    frame = row.frame("BNBBTC")
    data = json.loads(frame)["data"]
    assert data["T"] == 1735689600010866 and data["E"] == 1735689600010866
    assert b'"T":1735689600010866,' in frame
    assert classify(frame).invalid is None and classify(frame).key == b"BNBBTC"


def test_trades_row_before_2025_stays_milliseconds():
    row = parse_line("51175358,17.80180000,5.69000000,101.29224200,1583709433583,True,True")
    assert isinstance(row, CsvTrade)
    assert json.loads(row.frame("BNBBTC"))["data"]["T"] == 1583709433583


@pytest.mark.parametrize(
    ("line", "time"),
    [
        ("0,0.20000000,50.00000000,0,0,1735689600010866,False,True", 1735689600010866),
        ("26129,0.01633102,4.70443515,27781,27783,1498793709153,true,false", 1498793709153),
    ],
)
def test_agg_trades_row_to_frame_in_the_file_unit(line, time):
    row = parse_agg_trade_line(line + "\r\n")
    assert isinstance(row, CsvAggTrade) and row.time == time
    cols = line.split(",")
    assert row.frame("BTCUSDT") == agg_trade_frame(
        "BTCUSDT", int(cols[0]), cols[1], cols[2], int(cols[3]), int(cols[4]), time,
        cols[6].lower() == "true", cols[7].lower() == "true",
    )  # fmt: skip
    data = json.loads(row.frame("BTCUSDT"))["data"]
    assert (data["T"], data["E"], data["p"], data["q"]) == (time, time, cols[1], cols[2])
    assert row.record_id == int(cols[0])
    assert classify(row.frame("BTCUSDT"))[:4] == (b"BTCUSDT", "BTCUSDT", int(cols[0]), None)


@pytest.mark.parametrize(
    ("line", "open_time"), [(KLINE_US, 1735689600000000), (KLINE_MS, 1601510340000)]
)
def test_kline_row_to_closed_kline_frame_in_the_file_unit(line, open_time):  # fmt: skip
    row = parse_kline_line(line)
    assert isinstance(row, CsvKline) and row.record_id == open_time
    assert row.frame("BTCUSDT") == kline_frame("BTCUSDT", line.split(","))
    k = json.loads(row.frame("BTCUSDT"))["data"]["k"]
    assert (k["t"], k["T"], k["x"], k["i"]) == (open_time, int(line.split(",")[6]), True, "1m")
    assert (k["f"], k["L"], k["n"]) == (-1, -1, int(line.split(",")[8]))
    assert classify(row.frame("BTCUSDT"))[:4] == (b"BTCUSDT", "BTCUSDT", open_time, None)


@pytest.mark.parametrize(
    ("parse", "line", "reason"),
    [
        (parse_agg_trade_line, "1,2,3", "3 columns, expected 8"),
        (parse_agg_trade_line, "x,1.0,1.0,1,1,1,true,true", "agg_trade_id/first_trade_id"),
        (parse_agg_trade_line, "1,1.0,1e3,1,1,1,true,true", "price/quantity is not a decimal"),
        (parse_agg_trade_line, "1,1.0,1.0,1,1,-5,true,true", "transact_time is not an integer"),
        (parse_agg_trade_line, "1,1.0,1.0,1,1,1,yes,true", "is_buyer_maker/is_best_match"),
        (parse_kline_line, KLINE_MS + ",0", "13 columns, expected 12"),
        (parse_kline_line, "x" + KLINE_MS, "open_time/close_time is not an integer"),
        (parse_kline_line, KLINE_MS.replace("4.15870000", "NaN"), "price or volume"),
        (parse_kline_line, KLINE_MS.replace(",13,", ",13.5,"), "count is not an integer"),
        (parse_line, "1,1,1,1,1.5,true,true", "time is not an integer"),
    ],
)
def test_bad_rows_give_the_reason(parse, line, reason):
    got = parse(line)
    assert isinstance(got, str) and got.startswith("malformed CSV line: ") and reason in got


@pytest.mark.parametrize(
    ("line", "columns", "expected"),
    [
        (AGG_HEADER, 8, True),
        ("\ufeff" + KLINE_HEADER + "\r\n", 12, True),
        (TRADE_HEADER, 7, True),
        ("Open time,Open,High,Low,Close,Volume,Close time,Quote,Trades,V,Q,Ignore", 12, True),
        (AGG_HEADER, 7, False),  # a header of another kind is a bad row, not skipped
        ("0,0.20000000,50.00000000,0,0,1735689600010866,False,True", 8, False),
        ("not,a,trade", 3, True),
        ("not,a,trade", 7, False),
    ],
)
def test_header_detection(line, columns, expected):
    assert is_header(line, columns) is expected


# --- replay into a fake producer ------------------------------------------------------------


class FakeProducer:
    buffered = 0

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, dict[str, bytes]]] = []

    def produce_blocking(self, topic, key, value, timestamp_ms, headers) -> None:
        self.sent.append((topic, key, value, dict(headers)))

    def poll(self, timeout: float = 0) -> None:
        pass


def _zip(path: Path, lines: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(path.with_suffix(".csv").name, "\n".join(lines) + "\n")
    return path


def test_replay_routes_each_kind_to_its_topic_and_flags_bad_rows(tmp_path, monkeypatch):
    ensured: list[str] = []
    monkeypatch.setattr(csv_replay.kafka, "ensure_topic", lambda s, t: ensured.append(t))
    s = _settings()
    agg = _zip(
        tmp_path / "BTCUSDT-aggTrades-2025-01-01.zip",
        [
            AGG_HEADER,
            "10,93576.00,0.5,100,102,1735689600010866,False,True",
            "11,93577.00,0.25,103,103,1735689600020000,True,True",
            "11,93577.00,0.25,103,103,1735689600020000,True,True",  # duplicate
            "12,bad,0.25,104,104,1735689600030000,True,True",
        ],
    )
    klines = _zip(tmp_path / "BTCUSDT-1m-2024-12-31.zip", [KLINE_MS, "", "1,2"])
    trades = tmp_path / "BTCUSDT-trades-2025-01-01.csv"
    trades.write_text("51175358,17.80180000,5.69000000,101.29224200,1735689600010866,True,True\n")
    producer, stats = FakeProducer(), IngestStats()

    replay(s, producer, stats, [agg, klines, trades], None, threading.Event())  # type: ignore[arg-type]

    assert sorted(ensured) == ["t.aggtrades.raw", "t.klines.raw"]
    topics = [t for t, *_ in producer.sent]
    assert topics == ["t.aggtrades.raw"] * 4 + ["t.klines.raw"] * 2 + ["t.trades.raw"]
    assert all(k == b"BTCUSDT" and h["source"] == b"csv" for _, k, _, h in producer.sent)
    values = [v for _, _, v, _ in producer.sent]
    assert json.loads(values[0])["data"]["T"] == 1735689600010866
    assert values[0] == agg_trade_frame(
        "BTCUSDT", 10, "93576.00", "0.5", 100, 102, 1735689600010866, False
    )
    assert values[4] == kline_frame("BTCUSDT", KLINE_MS.split(","))
    assert json.loads(values[6])["data"]["T"] == 1735689600010866
    bad = [(v, h[INVALID_HEADER]) for _, _, v, h in producer.sent if INVALID_HEADER in h]
    assert bad == [
        (
            b"12,bad,0.25,104,104,1735689600030000,True,True",
            b"malformed CSV line: price/quantity is not a decimal",
        ),
        (b"1,2", b"malformed CSV line: 2 columns, expected 12"),
    ]
    assert (stats.frames, stats.invalid, stats.duplicates) == (7, 2, 1)
    assert stats.last_trade_id == {"BTCUSDT": 51175358}  # trades only


def test_replay_skips_files_of_kinds_not_streamed(tmp_path, monkeypatch):
    monkeypatch.setattr(csv_replay.kafka, "ensure_topic", lambda s, t: pytest.fail(t))
    klines = _zip(tmp_path / "ETHUSDT-1m-2025-01-01.zip", [KLINE_US])
    producer, stats = FakeProducer(), IngestStats()
    replay(_settings("trade"), producer, stats, [klines], None, threading.Event())  # type: ignore[arg-type]
    assert producer.sent == [] and stats.frames == 0
