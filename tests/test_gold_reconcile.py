"""Reconciliation (pipelines/gold/reconcile.py, aggcheck.py) through the real PostgreSQL as
the pipeline's writer, in the transaction that folds the trades and upserts the exchange's
klines; and ``cryptoflow reconcile`` reading the result as the read-only login."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest

from cryptoflow.cli import main
from pipelines.gold.reconcile import kline_minutes, reconcile, verdict
from pipelines.ops.status import reconciliation_text, snapshot
from tests.candle_oracle import expected_candles
from tests.gold_data import trade
from tests.gold_pg import at, fold_cur, in_tx, kline, rows, upsert_klines
from tests.pipeline_helpers import env_for

HOUR_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
WATERMARK_S = 10


def minute(i: int) -> int:
    return HOUR_MS + i * 60_000


def _batch(settings, lake, trades, klines=()):
    """One batch's transaction: klines upserted, trades folded, then reconciled."""

    def work(cur):
        upsert_klines(cur, klines)
        folded = fold_cur(cur, lake, trades)
        return reconcile(cur, lake, folded.minutes + kline_minutes(klines), WATERMARK_S)

    return in_tx(settings, work)


def _status(settings, symbols) -> dict:
    found = rows(settings, "SELECT symbol, minute, status, differences FROM reconciliation"
                 " WHERE symbol = ANY(%s)", (list(symbols),))  # fmt: skip
    return {(r["symbol"], r["minute"]): (r["status"], r["differences"]) for r in found}


def _one_minute(trades) -> dict:
    (c,) = expected_candles(trades, [("1m", 60)])
    return c


def test_verdict_compares_quote_volumes_at_8_places_half_even_and_skips_unknown_ids():
    ours = {"open": Decimal("1"), "high": Decimal("2"), "low": Decimal("1"),
            "close": Decimal("2"), "volume": Decimal("3"),
            "quote_volume": Decimal("0.123456785"), "trades": 2,
            "taker_buy_volume": Decimal("0"), "taker_buy_quote_volume": Decimal("0.000000015"),
            "first_trade_id": 4, "last_trade_id": 5}  # fmt: skip
    theirs = dict(ours, quote_volume=Decimal("0.12345678"), taker_buy_quote_volume=Decimal(
        "0.00000002"), first_trade_id=-1, last_trade_id=-1)  # fmt: skip
    assert verdict(ours, theirs) == ("match", {})
    off = dict(theirs, quote_volume=Decimal("0.12345679"), last_trade_id=6)
    assert verdict(ours, off) == ("mismatch", {
        "quote_volume": {"ours": "0.12345678", "exchange": "0.12345679"},
        "last_trade_id": {"ours": "5", "exchange": "6"},
    })  # fmt: skip
    assert verdict(None, dict(theirs, trades=0)) == ("match", {})
    assert verdict(None, theirs) == ("missing_ours", {})
    assert verdict(ours, None) == ("missing_exchange", {})


def test_minutes_are_reconciled_in_the_batch_and_again_when_touched(settings, unique):
    s = f"R{unique.upper()}USDT"
    lake = f"/lake/{unique}"
    m1 = [trade(s, 10, "100.12345678", "0.33333333", minute(1) + 5, False),
          trade(s, 11, "100.5", "1.5", minute(1) + 900, True),
          trade(s, 12, "99.87654321", "0.77777777", minute(1) + 59_999, False)]  # fmt: skip
    m2 = [trade(s, 20, "101", "1", minute(2) + 1, False),
          trade(s, 21, "102", "2", minute(2) + 2, True)]  # fmt: skip
    m3_late = trade(s, 30, "103", "1", minute(3) + 10, False)  # arrives in a later batch
    m3 = [trade(s, 31, "104", "1", minute(3) + 20, True)]
    m6 = [trade(s, 60, "105", "1", minute(6) + 20, True)]  # ours, no exchange kline
    m7 = [trade(s, 70, "106", "1", minute(7) + 20, True)]  # ours, none yet, not final
    c3 = _one_minute(m3 + [m3_late])
    klines = [
        kline(_one_minute(m1)),  # match (quote volume has 16 places, the exchange's 8)
        kline(_one_minute(m2), high=Decimal("102.5"), first_trade_id=-1),  # mismatch: high
        kline(c3),  # mismatch until the late trade comes
        kline(_one_minute([trade(s, 40, "1", "1", minute(4), False)]), trades=7),  # missing_ours
        kline(_one_minute([trade(s, 50, "1", "1", minute(5), False)]), trades=0),  # 0 trades
        kline(_one_minute([trade(s, 80, "1", "1", minute(8), False)]), is_closed=False),
    ]
    # the newest minute folded is 9: minutes ending 70 s (watermark + grace) before it are final
    m9 = [trade(s, 90, "107", "1", minute(9) + 1, False)]
    counts = _batch(settings, lake, m1 + m2 + m3 + m6 + m7 + m9, klines)
    got = _status(settings, [s])
    assert got[(s, at(minute(1)))] == ("match", {})
    assert got[(s, at(minute(2)))] == (
        "mismatch", {"high": {"ours": "102.00000000", "exchange": "102.50000000"}})  # fmt: skip
    status, diff = got[(s, at(minute(3)))]
    assert status == "mismatch" and set(diff) == {
        "open", "low", "volume", "quote_volume", "trades", "taker_buy_volume",
        "taker_buy_quote_volume", "first_trade_id"}  # fmt: skip
    assert diff["trades"] == {"ours": "1", "exchange": "2"}
    assert diff["first_trade_id"] == {"ours": "31", "exchange": "30"}
    assert got[(s, at(minute(4)))] == ("missing_ours", {})
    assert got[(s, at(minute(5)))] == ("match", {})
    assert got[(s, at(minute(6)))] == ("missing_exchange", {})
    assert (s, at(minute(7))) not in got  # not final yet, no kline yet: undecided
    assert (s, at(minute(8))) not in got  # the exchange's kline is not closed
    assert counts == Counter(match=2, mismatch=2, missing_ours=1, missing_exchange=1)

    # the late trade re-reconciles its minute; newer trades make minutes 7 and 9 final
    m12 = [trade(s, 120, "108", "1", minute(12), False)]
    counts = _batch(settings, lake, [m3_late] + m12)
    got = _status(settings, [s])
    assert got[(s, at(minute(3)))] == ("match", {})
    assert got[(s, at(minute(7)))] == ("missing_exchange", {})
    assert got[(s, at(minute(9)))] == ("missing_exchange", {})  # final now too
    assert (s, at(minute(12))) not in got
    assert counts == Counter(match=1, missing_exchange=2)
    # the exchange's kline for minute 6 comes late: minute 6 is checked again
    counts = _batch(settings, lake, [], [kline(_one_minute(m6))])
    assert _status(settings, [s])[(s, at(minute(6)))] == ("match", {})
    assert counts == Counter(match=1)
    changed = rows(settings, "SELECT minute, checked_at, lake FROM reconciliation"
                   " WHERE symbol = %s", (s,))  # fmt: skip
    assert {r["lake"] for r in changed} == {lake}

    # cryptoflow reconcile: a table, the summary and exit 1 (mismatches), as the reader
    env = env_for(settings)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        since = at(minute(0)).isoformat()
        code = main(["--log-file", "-", "reconcile", "--since", since, "--symbol", s])
        assert code == 1
        code_json = main(["--log-file", "-", "reconcile", "--since", since, "--symbol", s,
                          "--json", "--status", "mismatch"])  # fmt: skip
        assert code_json == 1
        ok = main(["--log-file", "-", "reconcile", "--since", at(minute(10)).isoformat(),
                   "--symbol", s])  # fmt: skip
        assert ok == 0


def test_cli_prints_minutes_differences_and_summary(settings, unique, capsys):
    s = f"Q{unique.upper()}USDT"
    lake = f"/lake/{unique}"
    m1 = [trade(s, 1, "10", "1", minute(1), False)]
    m2 = [trade(s, 2, "20", "1", minute(2), True)]
    _batch(settings, lake, m1 + m2,
           [kline(_one_minute(m1)), kline(_one_minute(m2), close=Decimal("21"))])  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env_for(settings).items():
            mp.setenv(k, v)
        args = ["--log-file", "-", "reconcile", "--since", at(minute(0)).isoformat(),
                "--symbol", s.lower()]  # fmt: skip
        capsys.readouterr()
        assert main(args) == 1
        out = capsys.readouterr().out
        lines = out.splitlines()
        assert lines[0].split() == ["minute", "symbol", "status", "differences", "checked_at"]
        assert "2026-01-01 00:01:00+00:00" in lines[2] and " match " in lines[2]
        assert "mismatch  close ours=20.00000000 exchange=21.00000000" in lines[3]
        assert lines[-1].endswith(": 2 minutes: 1 match, 1 mismatch, 0 missing_exchange, "
                                  "0 missing_ours; 0 aggregate mismatches")  # fmt: skip
        assert main([*args, "--json", "--status", "mismatch"]) == 1
        doc = json.loads(capsys.readouterr().out)
        assert [m["status"] for m in doc["minutes"]] == ["mismatch"]
        assert doc["minutes"][0]["differences"] == {
            "close": {"ours": "20.00000000", "exchange": "21.00000000"}}  # fmt: skip
        assert doc["summary"]["match"] == 1 and doc["all_match"] is False
        assert main([*args, "--since", "banana"]) == 2
        assert "--since 'banana': expected a duration" in capsys.readouterr().err
    # cryptoflow status: the summary line of every symbol's minutes, pointing at the command
    text = reconciliation_text(settings, at(minute(0)))
    assert re.fullmatch(r"\d+ minutes: \d+ match, [1-9]\d* mismatch, \d+ missing_exchange, "
                        r"\d+ missing_ours; \d+ aggregate mismatches  \(see `cryptoflow "
                        r"reconcile`\)", text), text  # fmt: skip
    screen = snapshot(settings, services=[])
    assert "\nreconciliation (last hour)\n  " in screen, screen
    assert reconciliation_text(settings, at(minute(0)) + timedelta(days=3650)).startswith(
        "no minute reconciled yet"
    )


def _agg(cur, symbol, agg_id, price, qty, first, last, maker=False):
    t = at(HOUR_MS)
    cur.execute(
        "INSERT INTO agg_trades (symbol, agg_trade_id, price, quantity, first_trade_id,"
        " last_trade_id, is_buyer_maker, event_time, trade_time, ingestion_time, spark_time)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (symbol, agg_trade_id)"
        " DO UPDATE SET quantity = EXCLUDED.quantity",
        (symbol, agg_id, price, qty, first, last, maker, t, t, t, t),
    )


def test_aggregates_are_checked_against_their_trades_once_all_are_present(settings, unique):
    from pipelines.gold.aggcheck import check_aggregates

    s = f"G{unique.upper()}USDT"
    lake = f"/lake/{unique}"
    trades = [trade(s, i, "5.5", f"{i}.25", HOUR_MS + i, False) for i in range(1, 8)]

    def first(cur):
        _agg(cur, s, 100, "5.5", "6.75", 1, 3)  # 1.25 + 2.25 + 3.25: right
        _agg(cur, s, 101, "5.5", "9", 4, 5)  # 4.25 + 5.25 = 9.5: wrong
        _agg(cur, s, 102, "5.5", "21.75", 6, 8)  # trade 8 is missing: not checked yet
        folded = fold_cur(cur, lake, trades)
        return check_aggregates(cur, [(s, 100), (s, 101), (s, 102)], folded.trade_ranges)

    assert in_tx(settings, first) == {"checked": 2, "mismatch": 1}
    got = rows(settings, "SELECT agg_trade_id, status, differences FROM agg_reconciliation"
               " WHERE symbol = %s ORDER BY 1", (s,))  # fmt: skip
    assert got == [{"agg_trade_id": 101, "status": "mismatch", "differences": {
        "quantity": {"ours": "9.50000000", "exchange": "9.00000000"}}}]  # fmt: skip

    # trade 8 arrives at another price and side: its aggregate is found through the trade
    def second(cur):
        folded = fold_cur(cur, lake, [trade(s, 8, "5.6", "8.25", HOUR_MS + 8, True)])
        return check_aggregates(cur, [], folded.trade_ranges)

    assert in_tx(settings, second) == {"checked": 1, "mismatch": 1}
    (row,) = rows(settings, "SELECT differences FROM agg_reconciliation"
                  " WHERE symbol = %s AND agg_trade_id = 102", (s,))  # fmt: skip
    assert row["differences"] == {
        "price": {"ours": "5.50000000..5.60000000", "exchange": "5.50000000"},
        "is_buyer_maker": {"ours": "mixed", "exchange": "false"},
    }

    # a corrected aggregate passes its next check and is set back to match
    def third(cur):
        _agg(cur, s, 101, "5.5", "9.5", 4, 5)
        return check_aggregates(cur, [(s, 101)])

    assert in_tx(settings, third) == {"checked": 1, "mismatch": 0}
    assert rows(settings, "SELECT status, differences FROM agg_reconciliation"
                " WHERE symbol = %s AND agg_trade_id = 101", (s,)) == [
        {"status": "match", "differences": {}}]  # fmt: skip
    assert in_tx(settings, lambda cur: check_aggregates(cur)) == {"checked": 0, "mismatch": 0}

    # With many days of raw_trades, a check reads the partitions around its aggregates' time.
    def scanned(cur):
        from pipelines.gold.aggcheck import _CHECK

        old_days = [f"2025-01-{d:02d}" for d in range(1, 13)]
        cur.execute("SELECT serving_ensure_days('raw_trades'::regclass, %s::date[])", (old_days,))
        params = {"agg_symbols": [s], "agg_ids": [100], "range_symbols": [], "los": [],
                  "his": []}  # fmt: skip
        cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + _CHECK, params)
        return _executed_partitions(cur.fetchone()[0][0]["Plan"], "raw_trades_p")

    read = in_tx(settings, scanned)
    assert 1 <= len(read) <= 3, read


def _executed_partitions(plan: dict, prefix: str) -> set[str]:
    """The partitions (relation names starting with ``prefix``) a plan's nodes read."""
    found = set()
    if plan.get("Relation Name", "").startswith(prefix) and plan.get("Actual Loops", 0) > 0:
        found.add(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found |= _executed_partitions(child, prefix)
    return found


def test_live_page_and_grafana_summaries_read_reconciliation(settings, unique):
    """The live page's reconciliation view and the Grafana panel, as the read-only login:
    one row per status, counting this test's minutes and naming the differing field."""
    from datetime import UTC, datetime

    from cryptoflow.core.db import connect
    from cryptoflow.core.services.postgres import reader_dsn
    from cryptoflow.dashboard.data import run_view
    from cryptoflow.dashboard.queries import view
    from tests.dashboard.test_grafana import expand, grafana_queries

    s = f"P{unique.upper()}USDT"
    now_minute = (int(datetime.now(UTC).timestamp()) // 60 - 3) * 60_000
    m1 = [trade(s, 1, "10", "1", now_minute, False)]
    _batch(settings, f"/lake/{unique}", m1, [kline(_one_minute(m1), trades=2)])
    since = at(now_minute) - timedelta(seconds=1)
    conn = connect(reader_dsn(settings))
    conn.set_session(readonly=True, autocommit=True)
    try:
        with conn.cursor() as cur:
            got = run_view(cur, view("reconciliation"), {"since": since})
            (label, raw) = next(q for q in grafana_queries() if "Reconciliation" in q[0])
            cur.execute(expand(raw, since, at(now_minute + 60_000), [s], 5))
            panel = cur.fetchall()
    finally:
        conn.close()
    assert got["available"] and got["columns"] == [
        "status", "minutes", "latest_minute", "differing_fields"]  # fmt: skip
    by_status = {r[0]: r for r in got["rows"]}
    assert list(by_status) == ["match", "mismatch", "missing_exchange", "missing_ours"]
    assert by_status["mismatch"][1] >= 1 and "trades" in by_status["mismatch"][3]
    assert [r[0] for r in panel] == list(by_status), label
    assert dict((r[0], r[1]) for r in panel)["mismatch"] >= 1


def test_kline_minutes_are_the_closed_1m_klines_in_utc():
    import pyarrow as pa

    t = at(HOUR_MS)
    table = pa.table({
        "symbol": ["A", "A", "B", "C"], "interval": ["1m", "1m", "5m", "1m"],
        "open_time": pa.array([t.replace(tzinfo=None)] * 4, pa.timestamp("us")),
        "is_closed": [True, False, True, True],
    })  # fmt: skip
    assert kline_minutes(table) == [("A", t), ("C", t)]
    assert kline_minutes(table.to_pylist()[:1]) == [("A", t)]
