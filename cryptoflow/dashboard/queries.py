"""Every SQL statement of the live page, parameters only (no formatted values).

Each chart view returns rows ``(panel, series, t, value)``: one chart per ``panel``, one line
per ``series``. Parameters: ``since`` (timestamptz), ``window_s`` (the gold window length in
seconds, so longer windows are not mixed in), ``bucket_s`` (bucket of raw-row aggregates).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class View:
    """A section of the page: what it shows, the table it needs, and its query."""

    name: str
    title: str
    table: str
    sql: str
    kind: str = "chart"  # chart: rows (panel, series, t, value) | table: named columns
    unit: str = ""


# Grafana's dashboards show the same views; keep their meaning in step (docs/dashboard.md).
VIEWS: tuple[View, ...] = (
    View(
        "price",
        "Price and VWAP per symbol",
        "metrics",
        """SELECT m.symbol, s.series, m.window_start, s.value
           FROM metrics m
           CROSS JOIN LATERAL (VALUES ('average price', m.avg_price), ('vwap', m.vwap))
                AS s(series, value)
           WHERE m.window_start >= %(since)s
             AND m.window_end - m.window_start = make_interval(secs => %(window_s)s)
           ORDER BY 1, 2, 3""",
        unit="USDT",
    ),
    View(
        "volume",
        "Volume per window",
        "metrics",
        """SELECT 'volume', symbol, window_start, total_volume
           FROM metrics
           WHERE window_start >= %(since)s
             AND window_end - window_start = make_interval(secs => %(window_s)s)
           ORDER BY 1, 2, 3""",
        unit="base asset",
    ),
    View(
        "buy_sell",
        "Buy vs sell volume (taker side)",
        "metrics",
        """SELECT m.symbol, s.series, m.window_start, s.value
           FROM metrics m
           CROSS JOIN LATERAL (VALUES ('buy', m.buy_volume), ('sell', m.sell_volume))
                AS s(series, value)
           WHERE m.window_start >= %(since)s
             AND m.window_end - m.window_start = make_interval(secs => %(window_s)s)
           ORDER BY 1, 2, 3""",
        unit="base asset",
    ),
    View(
        "intensity",
        "Trade intensity",
        "metrics",
        """SELECT 'trades per second', symbol, window_start, trade_intensity
           FROM metrics
           WHERE window_start >= %(since)s
             AND window_end - window_start = make_interval(secs => %(window_s)s)
           ORDER BY 1, 2, 3""",
        unit="trades/s",
    ),
    View(
        "latency",
        "Latency chain (average per bucket)",
        "raw_trades",
        """SELECT 'latency', s.series, b.t, s.value
           FROM (SELECT date_bin(make_interval(secs => %(bucket_s)s), trade_time,
                                 TIMESTAMPTZ '2000-01-01') AS t,
                        avg(exchange_latency_ms) AS exchange,
                        avg(source_latency_ms) AS source,
                        avg(end_to_end_latency_ms) AS end_to_end,
                        avg(extract(epoch FROM mirrored_at - trade_time) * 1000) AS serving
                 FROM raw_trades
                 WHERE trade_time >= %(since)s
                 GROUP BY 1) b
           CROSS JOIN LATERAL (VALUES (1, 'exchange', b.exchange), (2, 'source', b.source),
                                      (3, 'end to end', b.end_to_end), (4, 'serving', b.serving))
                AS s(step, series, value)
           ORDER BY s.step, b.t""",
        unit="ms",
    ),
    View(
        "pipeline",
        "Pipeline health per micro-batch",
        "pipeline_batches",
        """SELECT s.panel, b.job, b.recorded_at, s.value
           FROM pipeline_batches b
           CROSS JOIN LATERAL (VALUES
                (0, 'output rows per batch', b.output_rows::numeric),
                (1, 'input rows per batch', b.input_rows::numeric),
                (2, 'batch duration (ms)', b.duration_ms::numeric),
                (3, 'kafka lag (records)', b.kafka_lag::numeric),
                (4, 'output latency p99 (ms)', b.latency_p99_ms::numeric),
                (5, 'quarantined rows per batch', b.quarantined::numeric))
                AS s(step, panel, value)
           WHERE b.recorded_at >= %(since)s
           ORDER BY s.step, b.job, b.recorded_at""",
    ),
    View(
        "dq",
        "Data quality: latest validation runs",
        "dq_results",
        """SELECT to_char(started_at AT TIME ZONE 'UTC', 'HH24:MI:SS') AS started,
                  suite, table_name, delta_version,
                  CASE WHEN success THEN 'passed' ELSE 'FAILED' END AS result,
                  rows_validated,
                  expectations_failed || ' / ' || expectations_evaluated AS failed_expectations,
                  duration_ms
           FROM dq_results
           ORDER BY started_at DESC
           LIMIT 8""",
        kind="table",
    ),
    View(
        "quarantine",
        "Quarantined rows per minute, by failed expectation",
        "quarantine",
        """SELECT 'quarantined rows', e.name,
                  date_bin(INTERVAL '1 minute', q.quarantined_at, TIMESTAMPTZ '2000-01-01'),
                  count(*)
           FROM quarantine q
           CROSS JOIN LATERAL unnest(q.failed_expectations) AS e(name)
           WHERE q.quarantined_at >= %(since)s
           GROUP BY 1, 2, 3
           ORDER BY 1, 2, 3""",
        unit="rows",
    ),
    View(
        "reconciliation",
        "Reconciliation: our 1 m candles vs the exchange's klines",
        "reconciliation",
        """SELECT s.status, count(r.minute) AS minutes,
                  to_char(max(r.minute) AT TIME ZONE 'UTC', 'HH24:MI') AS latest_minute,
                  (SELECT string_agg(DISTINCT k.name, ', ')
                   FROM reconciliation r2
                   CROSS JOIN LATERAL jsonb_object_keys(r2.differences) AS k(name)
                   WHERE r2.status = s.status AND r2.minute >= %(since)s) AS differing_fields
           FROM (VALUES (1, 'match'), (2, 'mismatch'), (3, 'missing_exchange'),
                        (4, 'missing_ours')) AS s(n, status)
           LEFT JOIN reconciliation r ON r.status = s.status AND r.minute >= %(since)s
           GROUP BY s.n, s.status
           ORDER BY s.n""",
        kind="table",
    ),
)

#: Tables the views read that other parts of the pipeline create; absent ones are reported.
TABLE_EXISTS = "SELECT to_regclass(%(table)s) IS NOT NULL"

#: Newest serving-table activity, for the page header. The newest trade and window come from
#: functions (sql/091_latest_rows.sql) that read the last day's partitions only (older ones
#: when the last day is empty): max() over raw_trades or metrics would plan every day
#: partition kept (docs/serving.md).
FRESHNESS = """SELECT newest_trade_time() AS last_trade, newest_window_end() AS last_window,
                      (SELECT count(*) FROM raw_trades WHERE trade_time >= %(since)s) AS trades"""


def view(name: str) -> View:
    for v in VIEWS:
        if v.name == name:
            return v
    raise KeyError(name)
