"""CSV replay of Binance public-data trade files into the real Kafka broker."""

from __future__ import annotations

import json
import time

import pytest

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
    assert eth[5001]["T"] == (1735776000000123 + 3500) // 1000  # µs -> ms
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
