"""The benchmark's naive pipeline (bench/naive_pipeline.py): Kafka -> from_json -> JDBC append
lands every produced trade exactly as sent."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.pipeline_helpers import isolated, pg_rows, produce_trades, trades

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from naive_pipeline import drain_naive  # noqa: E402

pytestmark = pytest.mark.integration


def test_drain_naive_lands_every_trade(settings, unique, tmp_path) -> None:
    s = isolated(settings, unique, tmp_path)
    payloads = trades(200, s.symbols)
    produce_trades(s, payloads)
    table = f"naive_{unique}"

    result = drain_naive(s, len(payloads), table, timeout=600, poll=0.5)

    rows = pg_rows(
        s,
        f"SELECT symbol, trade_id, price, quantity, is_buyer_maker, "
        f"(extract(epoch FROM trade_time) * 1000)::bigint, "
        f"(extract(epoch FROM event_time) * 1000)::bigint, end_to_end_latency_ms "
        f"FROM {table}",
    )
    assert len(rows) == result["rows"] == len(payloads)  # no replayed batch
    assert {r[:7] for r in rows} == {
        (t["s"], t["t"], Decimal(t["p"]), Decimal(t["q"]), t["m"], t["T"], t["E"]) for t in payloads
    }
    assert all(r[7] >= 0 for r in rows)
    assert result["commits"] >= 1 and result["seconds_total"] > 0
    assert result["peak_rss_mb_pipeline"] > 0
