"""Against the real exchange (off by default: ``pytest -m live``); needs Internet access."""

from __future__ import annotations

import pytest

from tests.conftest import wait_until
from tests.ingest_helpers import ingesting, read_topic, trade_ids

pytestmark = [pytest.mark.live, pytest.mark.integration]


def test_live_binance_trades_reach_kafka(settings, unique):
    s = settings.replace(
        source="binance", binance_endpoint="vision", kafka_topic_prefix=f"live-{unique}"
    )
    with ingesting(s) as ing:
        wait_until(lambda: ing.stats.frames >= 20, 60, what="live trades from Binance")
    stats = ing.finish()
    got = trade_ids(read_topic(s, s.kafka_topic))
    assert len(got) >= 20 and stats.invalid == 0
    assert {sym for sym, _ in got} <= set(s.symbols)
