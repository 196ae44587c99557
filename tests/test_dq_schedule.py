"""Periodic validation: runs each existing silver table and gold each interval, survives
failures, stops cleanly."""

from __future__ import annotations

from cryptoflow.core.config import load_settings
from expectations.schedule import PeriodicValidation
from tests.conftest import wait_until


def test_runs_every_interval_and_survives_a_failing_table():
    calls: list[str] = []

    def validate(spark, settings, table):
        calls.append(table)
        if table == "gold":
            raise RuntimeError("table gold does not exist yet\nmore detail")

    s = load_settings(environ={}, dotenv=None)  # every stream kind
    created = {"silver", "agg_trades", "book_ticker"}  # klines' table not there yet
    job = PeriodicValidation(None, s, validate, interval_s=0.05, exists=created.__contains__)
    job.start()
    try:
        wait_until(lambda: calls.count("gold") >= 3, 30, 0.05, "three rounds")
    finally:
        job.stop()
    assert calls[:8] == ["silver", "agg_trades", "book_ticker", "gold"] * 2
    assert job.errors >= 3 and job.runs >= 3
    n = len(calls)
    wait_until(lambda: not job._thread.is_alive(), 10, 0.05, "thread stopped")
    assert len(calls) == n


def test_interval_zero_never_starts():
    s = load_settings(environ={}, dotenv=None, dq_interval_minutes=0)
    job = PeriodicValidation(None, s, lambda *a: None).start()
    assert not job._thread.is_alive()
    job.stop()


def test_tables_follow_the_chosen_stream_kinds():
    s = load_settings(environ={}, dotenv=None, streams="bookTicker")
    job = PeriodicValidation(None, s, lambda *a: None, exists=lambda t: True)
    assert job.tables() == ["silver", "book_ticker", "gold"]  # trade is always on
    assert PeriodicValidation(None, s, exists=lambda t: False).tables() == ["gold"]
