"""Serving bench: the README's and the dashboards' queries, and the mirror's upsert rate, as
raw_trades grows to 1 M, 10 M and 50 M rows (day-partitioned, sql/090_day_partitions.sql).

A private embedded PostgreSQL (the project's service code, a temp data dir, schema applied)
is filled with ``INSERT ... SELECT generate_series``, one day partition at a time, at a fixed
rate of trades per day (three symbols, 50/30/20 %, ids and times growing together), with the
metrics of those days (5 s and 60 s windows); each size adds OLDER days, so the newest hours
that the dashboards read are the same at every size, as a table that grows with time. After
each fill: ANALYZE, then (a) every query, read from where it lives (README.md's psql
examples, ``cryptoflow.dashboard.queries``, Grafana's market dashboard file: panels and
pickers), each in its own transaction, warm (one unmeasured run), median of ``--runs``, with
EXPLAIN's count of the partitions it read, whether it used an index, and the partitions it
opened (its locks: also those of the statements a function runs); (b) the answers of
sql/091's functions against the unbounded queries they replace; (c) the upsert rate through
the pipeline's own transaction (``pipelines.serve.serve_batch``: raw_trades, the fold into
metric_sums, metrics and candles, the ledger) of batches of new trades.

    nice -n 15 .venv/bin/python bench/bench_serving.py --sizes 1e6,1e7,5e7

Targets (issue 21): each query within 2x of its 1 M time, the upsert rate within 1.5x.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
from psycopg2 import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import RESULTS, _children, free_port  # noqa: E402
from cryptoflow.core import db  # noqa: E402
from cryptoflow.core.config import Settings, load_settings  # noqa: E402
from cryptoflow.core.services import postgres  # noqa: E402
from pipelines.gold.candles import parse_intervals  # noqa: E402
from pipelines.serve import Gold, serve_batch  # noqa: E402
from pipelines.silver.tables import RAW_TRADES  # noqa: E402

#: The newest day filled: yesterday (UTC), so that its end is "now" for the queries and the
#: partitions made ahead (today and the next days, empty) are there as in production.
LAST_DAY = datetime.combine(datetime.now(UTC).date() - timedelta(days=1), datetime.min.time(), UTC)
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
LEVELS = {"BTCUSDT": 90_000, "ETHUSDT": 3_000, "SOLUSDT": 150}
LENGTHS = (5, 60)

# One day of trades: row i of n at day + i/n of a day; symbol by i % 10 (50/30/20 %); ids
# day_number * 10^7 + i grow with time in every symbol. %(day)s, %(n)s.
FILL_TRADES = """
INSERT INTO {table}
SELECT x.symbol, (extract(epoch FROM %(day)s::timestamptz)::bigint / 86400) * 10000000 + i,
       round((x.level * (1 + 0.01 * sin(i / 5000.0)))::numeric, 2),
       round((0.0001 + (i * 7919 %% 100000) / 100000.0)::numeric, 5),
       i %% 2 = 0,
       x.t + interval '2 ms', x.t, x.t + interval '50 ms', x.t + interval '300 ms', 48, 50, 300,
       'bench', i %% 3, i, x.t + interval '400 ms'
FROM generate_series(0, %(n)s - 1) AS i
CROSS JOIN LATERAL (
    SELECT %(day)s::timestamptz + (i * 86400.0 / %(n)s) * interval '1 second' AS t,
           CASE WHEN i %% 10 < 5 THEN 'BTCUSDT' WHEN i %% 10 < 8 THEN 'ETHUSDT'
                ELSE 'SOLUSDT' END AS symbol,
           CASE WHEN i %% 10 < 5 THEN 90000 WHEN i %% 10 < 8 THEN 3000 ELSE 150 END AS level
) x
"""

# One day of metrics: every window of every length and symbol. %(day)s, %(lengths)s.
FILL_METRICS = """
INSERT INTO {table} (symbol, window_start, window_end, trade_count, total_volume, avg_price,
                     min_price, max_price, price_stddev, vwap, buy_volume, sell_volume,
                     buy_sell_ratio, trade_intensity, liquidity_proxy, avg_exchange_latency_ms,
                     avg_source_latency_ms, avg_end_to_end_latency_ms, mirrored_at)
SELECT s.symbol, w, w + make_interval(secs => l), 10, 1.5, 100.5, 100, 101, 0.5, 100.4,
       0.75, 0.75, 1, 10.0 / l, 150.75, 48, 50, 300,
       w + make_interval(secs => l) + interval '1 second'
FROM unnest(%(symbols)s::text[]) AS s(symbol)
CROSS JOIN unnest(%(lengths)s::int[]) AS l
CROSS JOIN LATERAL generate_series(%(day)s::timestamptz,
                                   %(day)s::timestamptz + interval '1 day' - interval '1 us',
                                   make_interval(secs => l)) AS w
"""


ROOT = Path(__file__).resolve().parents[1]
#: A query that reads the day-partitioned tables, or calls a function of
#: sql/091_latest_rows.sql that does.
SERVING_READ = re.compile(
    r"\b(?:raw_trades|metrics)\b|\b(?:latest_(?:trades|metrics)|newest_\w+|metrics_\w+)\s*\("
)


def readme_queries(path: Path = ROOT / "README.md") -> dict[str, str]:
    """The README's psql examples, as written there (``cryptoflow psql -c '...'`` and
    ``crypto=> ...;`` lines)."""
    text = path.read_text()
    found = re.findall(r"cryptoflow psql -c '([^']+)'", text)
    found += re.findall(r"^crypto=> (.+?);\s*$", text, re.M)
    return {f"readme: {q}": q for q in found if SERVING_READ.search(q)}


def grafana_sql(raw: str) -> str:
    """A Grafana query with its macros and variables as psycopg2 parameters: the time range
    %(since)s and %(until)s, %(bucket_s)s for $__interval, the symbols as %(symbols)s (a
    tuple: ``IN ($symbol)``) or %(symbol_array)s (``ARRAY[$symbol]``), %(window_s)s."""
    sql = raw.replace("%", "%%")
    group = r"floor(extract(epoch from \1)/%(bucket_s)s)*%(bucket_s)s"
    sql = re.sub(r"\$__timeGroupAlias\(([^,]+),[^)]*\)", group + ' AS "time"', sql)
    sql = re.sub(r"\$__timeGroup\(([^,]+),[^)]*\)", group, sql)
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", r"\1 BETWEEN %(since)s AND %(until)s", sql)
    sql = sql.replace("$__timeFrom()", "%(since)s").replace("$__timeTo()", "%(until)s")
    sql = sql.replace("ARRAY[$symbol]", "%(symbol_array)s").replace("($symbol)", "%(symbols)s")
    sql = sql.replace("$window", "%(window_s)s")
    assert "$" not in sql, f"a Grafana macro or variable the bench does not expand: {raw}"
    return sql


def grafana_queries(path: Path = ROOT / "docker/grafana/dashboards/cryptoflow-market.json"):
    """The market dashboard's template variables and panel queries that read raw_trades or
    metrics, as in the dashboard file."""
    board = json.loads(path.read_text())
    found = {}
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "query" and SERVING_READ.search(var["query"]):
            found[f"grafana: variable {var['name']}"] = grafana_sql(var["query"])
    for panel in board["panels"]:
        for t in panel.get("targets", []):
            if SERVING_READ.search(t["rawSql"]):
                found[f"grafana: {panel['title'].split(' · ')[0]}"] = grafana_sql(t["rawSql"])
    return found


def queries() -> dict[str, str]:
    """The README's and the dashboards' queries on raw_trades and metrics, read from where
    they live (README.md, ``cryptoflow.dashboard.queries``, the Grafana dashboard file),
    parameters as the live page and Grafana (last 15 min, window 5, every symbol) send them;
    %(since)s, %(until)s, %(symbols)s, %(symbol_array)s, %(window_s)s, %(bucket_s)s."""
    from cryptoflow.dashboard.queries import FRESHNESS, VIEWS

    found = readme_queries()
    found["page: freshness"] = FRESHNESS
    found |= {f"page: {v.name}": v.sql for v in VIEWS if v.table in ("raw_trades", "metrics")}
    return found | grafana_queries()


#: What the rewritten queries (sql/091_latest_rows.sql) must answer: the unbounded queries
#: they replace, which plan every partition. Checked on the bench's data at every size.
EQUIVALENT = {
    "SELECT trade_time FROM latest_trades(5)":
        "SELECT trade_time FROM raw_trades ORDER BY trade_time DESC LIMIT 5",
    "SELECT window_start FROM latest_metrics(5)":
        "SELECT window_start FROM metrics ORDER BY window_start DESC LIMIT 5",
    "SELECT newest_trade_time(), newest_trade_time(%(symbol_array)s), newest_window_end()":
        "SELECT max(trade_time), max(trade_time) FILTER (WHERE symbol IN %(symbols)s), "
        "(SELECT max(window_end) FROM metrics) FROM raw_trades",
    "SELECT * FROM metrics_symbols()": "SELECT DISTINCT symbol FROM metrics ORDER BY 1",
    "SELECT * FROM metrics_window_seconds()":
        "SELECT DISTINCT extract(epoch FROM window_end - window_start)::int FROM metrics "
        "ORDER BY 1",
}  # fmt: skip


def check_equivalent(dsn: str, params: dict) -> dict[str, bool]:
    """Each rewritten query's answer against the unbounded query's, in one snapshot."""
    out = {}
    conn = db.connect(dsn)
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            for new, old in EQUIVALENT.items():
                cur.execute(new, params)
                got = cur.fetchall()
                cur.execute(old, params)
                out[new] = got == cur.fetchall() and bool(got)
        conn.rollback()
    finally:
        conn.close()
    return out


@contextlib.contextmanager
def private_postgres(parent: str | None) -> Iterator[Settings]:
    """The embedded PostgreSQL alone, in a throwaway data dir under ``parent``, schema
    applied."""
    data_dir = Path(tempfile.mkdtemp(prefix="serving-bench-", dir=parent))
    data_dir.chmod(0o755)
    s = load_settings(environ={}, dotenv=None, data_dir=data_dir, postgres_port=free_port())
    postgres.start(s)
    try:
        db.apply_migrations(postgres.admin_dsn(s))
        postgres.ensure_login_roles(s)
        yield s
    finally:
        postgres.stop(s)
        shutil.rmtree(data_dir, ignore_errors=True)


def fill(dsn: str, rows: int, per_day: int, filled_days: int) -> int:
    """Add older days until raw_trades holds ``rows`` (whole days of ``per_day``); returns
    the days filled in all. The newest day is generated (``FILL_TRADES``, ``FILL_METRICS``),
    every older one copied from it with times shifted by whole days and ids by 10^7 a day
    (cheaper than generating each)."""
    days = max(1, round(rows / per_day))
    started = time.monotonic()
    conn = db.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for n in range(filled_days, days):
                day = LAST_DAY - timedelta(days=n)
                for table, statement in (("raw_trades", FILL_TRADES), ("metrics", FILL_METRICS)):
                    if n == 0:
                        fill_partition(cur, table, statement, day, per_day)
                    else:
                        fill_partition(cur, table, SHIFTED[table], day, n)
                done = (n + 1) * per_day
                if (n + 1) % 5 == 0 or n + 1 == days:
                    rate = (done - filled_days * per_day) / (time.monotonic() - started)
                    print(f"bench: filled {done:,} trades, {n + 1} days ({rate:,.0f} rows/s)",
                          flush=True)  # fmt: skip
            cur.execute("ANALYZE raw_trades")
            cur.execute("ANALYZE metrics")
    finally:
        conn.close()
    return days


def _newest(table: str) -> str:
    return f"{table}_p{LAST_DAY:%Y%m%d}"


#: An older day as a copy of the newest, %(n)s days before it.
SHIFTED = {
    "raw_trades": f"""
INSERT INTO {{table}}
SELECT symbol, trade_id - %(n)s * 10000000, price, quantity, is_buyer_maker,
       event_time - %(n)s * interval '1 day', trade_time - %(n)s * interval '1 day',
       ingestion_time - %(n)s * interval '1 day', spark_time - %(n)s * interval '1 day',
       exchange_latency_ms, source_latency_ms, end_to_end_latency_ms, source,
       kafka_partition, kafka_offset, mirrored_at - %(n)s * interval '1 day'
FROM {_newest("raw_trades")}""",
    "metrics": f"""
INSERT INTO {{table}}
SELECT symbol, window_start - %(n)s * interval '1 day', window_end - %(n)s * interval '1 day',
       trade_count, total_volume, avg_price, min_price, max_price, price_stddev, vwap,
       buy_volume, sell_volume, buy_sell_ratio, trade_intensity, liquidity_proxy,
       avg_exchange_latency_ms, avg_source_latency_ms, avg_end_to_end_latency_ms,
       mirrored_at - %(n)s * interval '1 day'
FROM {_newest("metrics")}""",
}


def fill_partition(cur, table: str, statement: str, day: datetime, n: int) -> None:
    """One day partition of ``table`` filled as a plain table, then attached (its indexes
    built at once, faster than row by row); the same shape as ``serving_ensure_days``.
    ``n``: the newest day's trades, or how many days before it an older day is."""
    part = sql.Identifier(f"{table}_p{day:%Y%m%d}")
    cur.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
        part, sql.Identifier(table)))  # fmt: skip
    cur.execute(
        sql.SQL(statement).format(table=part),
        {"day": day, "n": n, "symbols": list(SYMBOLS), "lengths": list(LENGTHS)},
    )
    cur.execute(
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM (%s) TO (%s)").format(
            sql.Identifier(table), part
        ),
        (day, day + timedelta(days=1)),
    )


def plan_facts(cur, query: str, params: dict) -> dict:
    """Partitions a query's plan lists, those it read (EXPLAIN ANALYZE: a scan that says
    "never executed" was skipped at run time), and whether it reads any by index; and the
    partitions it opened, counted by their locks, which holds for the statements a function
    runs too (for those, EXPLAIN shows the function call only)."""
    cur.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + query, params)
    plan = [r[0] for r in cur.fetchall()]
    scans = [line for line in plan if " on raw_trades_p" in line or " on metrics_p" in line]
    read = [line for line in scans if "never executed" not in line]
    planning = [float(line.split()[2]) for line in plan if line.startswith("Planning Time")]
    cur.connection.autocommit = False
    try:
        cur.execute(query, params)
        cur.fetchall()
        cur.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE l.pid = pg_backend_pid() AND c.relkind = 'r' AND c.relispartition"
        )
        opened = cur.fetchone()[0]
    finally:
        cur.connection.rollback()
        cur.connection.autocommit = True
    return {
        "planning_ms": planning[0] if planning else None,
        "partitions_planned": len(scans),
        "partitions": len(read),
        "partitions_opened": opened,
        "function": not scans and any("Function Scan" in line or "Result" in line for line in plan),
        "index": any("Index" in line for line in read),
        "seq_scans": sum("Seq Scan" in line for line in read),
    }


def on_cpu_ms(pid: int) -> float:
    """Milliseconds ``pid`` has run on a CPU (the scheduler's count, ns resolution): unlike
    wall time, not stretched by other processes on a shared machine."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e6


def query_params() -> dict:
    """The parameters the page and Grafana send: the last 15 minutes of the filled days,
    window 5, bucket 5 s, every symbol."""
    until = LAST_DAY + timedelta(days=1)
    return {"since": until - timedelta(minutes=15), "until": until, "symbols": SYMBOLS,
            "symbol_array": list(SYMBOLS), "window_s": 5, "bucket_s": 5}  # fmt: skip


def time_queries(dsn: str, runs: int) -> dict[str, dict]:
    """Median wall ms and median server CPU ms (the backend's on-CPU time) of each query
    (warm: one run first), each in its own transaction as the page and Grafana send them
    (autocommit: a partition's lock is taken again by every query), with its plan's facts."""
    params = query_params()
    out = {}
    conn = db.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            backend = cur.fetchone()[0]
            for name, query in queries().items():
                cur.execute(query, params)
                cur.fetchall()
                wall, cpu = [], []
                for _ in range(runs):
                    c0, t0 = on_cpu_ms(backend), time.perf_counter()
                    cur.execute(query, params)
                    cur.fetchall()
                    wall.append((time.perf_counter() - t0) * 1000)
                    cpu.append(on_cpu_ms(backend) - c0)
                facts = plan_facts(cur, query, params)
                out[name] = {"median_ms": statistics.median(wall),
                             "cpu_ms": statistics.median(cpu), **facts}  # fmt: skip
    finally:
        conn.close()
    return out


def new_trades(first: datetime, batch: int, n: int) -> pa.Table:
    """Batch ``n`` of ``batch`` trades after ``first``, as the pipeline hands them over."""
    rows = []
    base = (int(first.timestamp()) // 86400) * 10_000_000 + 9_000_000 + n * batch
    for i in range(batch):
        sym = SYMBOLS[i % 3]
        t = first + timedelta(milliseconds=n * batch + i)
        rows.append({
            "symbol": sym, "trade_id": base + i,
            "price": Decimal(LEVELS[sym]) + Decimal(i % 100) / 100,
            "quantity": Decimal("0.01") + Decimal(i % 7) / 1000, "is_buyer_maker": i % 2 == 0,
            "event_time": t + timedelta(milliseconds=2), "trade_time": t,
            "ingestion_time": t + timedelta(milliseconds=50),
            "spark_time": t + timedelta(milliseconds=300), "exchange_latency_ms": 48,
            "source_latency_ms": 50, "end_to_end_latency_ms": 300, "source": "bench-upsert",
            "kafka_partition": i % 3, "kafka_offset": n * batch + i,
        })  # fmt: skip
    return pa.Table.from_pylist([{c: r[c] for c in RAW_TRADES.columns} for r in rows])


def server_cpu_s(postmaster: int) -> float:
    """CPU seconds of the PostgreSQL server: its live processes and the exited backends the
    postmaster has reaped (cutime, cstime)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in _children({postmaster}):
        with contextlib.suppress(OSError, IndexError):
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / tick
            if pid == postmaster:
                total += (int(f[13]) + int(f[14])) / tick
    return total


def upsert_rate(dsn: str, admin: str, postmaster: int, size: int, batch: int, batches: int) -> dict:
    """Rows/s of ``batches`` batches of new trades through ``serve_batch`` (the pipeline's
    transaction), newest trades after the filled days; median batch and overall."""
    gold = Gold("bench-lake", LENGTHS, parse_intervals("1s,1m,5m,1h"))
    first = LAST_DAY + timedelta(days=1, hours=1)  # today
    tables = [new_trades(first, batch, n) for n in range(batches + 1)]
    serve_batch(dsn, f"bench-{size}", 0, tables[0], [], gold, 30)  # warm
    seconds = []
    server0, client0 = server_cpu_s(postmaster), time.process_time()
    for n, table in enumerate(tables[1:], 1):
        t0 = time.perf_counter()
        served = serve_batch(dsn, f"bench-{size}", n, table, [], gold, 30)
        seconds.append(time.perf_counter() - t0)
        assert served.trades == batch, served
    time.sleep(0.5)  # the last backend exits and is reaped
    server, client = server_cpu_s(postmaster) - server0, time.process_time() - client0
    conn = db.connect(admin)  # the next size's batches start from the same table again
    try:
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM raw_trades WHERE trade_time >= %s", (first,))
            cur.execute("DELETE FROM metrics WHERE window_start >= %s", (first,))
            cur.execute("DELETE FROM metric_sums")
            cur.execute("DELETE FROM candles")
        # ...and the next size's queries too: the deleted rows' index entries would stay in
        # today's partitions, the first that an ORDER BY trade_time DESC LIMIT 5 or a max()
        # walks (a pipeline never deletes: retention drops whole days).
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("VACUUM {}, {}, metric_sums, candles").format(
                sql.Identifier(f"raw_trades_p{first:%Y%m%d}"),
                sql.Identifier(f"metrics_p{first:%Y%m%d}")))  # fmt: skip
    finally:
        conn.close()
    return {
        "batch_rows": batch,
        "batches": batches,
        "median_batch_ms": statistics.median(seconds) * 1000,
        "rows_per_s": batch * batches / sum(seconds),
        "rows_per_server_cpu_s": batch * batches / max(server, 1e-9),
        "rows_per_cpu_s": batch * batches / max(server + client, 1e-9),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--sizes",
        default="1e6,1e7,5e7",
        help="raw_trades sizes, ascending, comma separated (default 1e6,1e7,5e7)",
    )
    ap.add_argument(
        "--per-day",
        type=float,
        default=250_000,
        help="trades per day partition (default 250000: 1 M = 4 days, 50 M = 200)",
    )
    ap.add_argument("--runs", type=int, default=15, help="timed runs of each query (median)")
    ap.add_argument("--batch", type=int, default=2000, help="trades per upsert batch")
    ap.add_argument("--batches", type=int, default=30, help="upsert batches timed per size")
    ap.add_argument(
        "--tmp",
        default="/var/tmp",
        help="where the throwaway data dir goes (50 M rows: ~15 GB; check df -h)",
    )
    args = ap.parse_args()  # fmt: skip
    sizes = [int(float(x)) for x in args.sizes.split(",")]
    per_day = int(args.per_day)
    path = None
    result: dict = {"sizes": sizes, "per_day": per_day, "runs": args.runs, "at": {}}
    with private_postgres(args.tmp) as s:
        admin, writer = postgres.admin_dsn(s), postgres.pipeline_dsn(s)
        reader = postgres.reader_dsn(s)
        postmaster = int((postgres.pgdata(s) / "postmaster.pid").read_text().split()[0])
        filled = 0
        for size in sizes:
            t0 = time.monotonic()
            filled = fill(admin, size, per_day, filled)
            fill_s = time.monotonic() - t0
            at: dict = {"rows": filled * per_day, "days": filled, "fill_s": fill_s}
            at["queries"] = time_queries(reader, args.runs)
            at["equivalent"] = check_equivalent(reader, query_params())
            at["upsert"] = upsert_rate(writer, admin, postmaster, size, args.batch, args.batches)
            result["at"][str(size)] = at
            report_size(size, at)
            report_ratios(result)
            path = save("serving", result, path)
    print(f"bench: results in {path}")
    return 0


def save(name: str, result: dict, path: Path | None) -> Path:
    """The results so far (after each size: a stopped run keeps what it measured)."""
    if path is None:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def report_size(size: int, at: dict) -> None:
    print(f"\n== {at['rows']:,} trades, {at['days']} days (filled in {at['fill_s']:.0f} s)")
    for name, q in at["queries"].items():
        how = "function" if q["function"] else "index" if q["index"] else "seq"
        plan = "" if q["planning_ms"] is None else f"plan {q['planning_ms']:6.2f} ms  "
        print(f"  {name:40s} {q['median_ms']:8.2f} ms  cpu {q['cpu_ms']:7.2f} ms  {plan}"
              f"partitions read/planned {q['partitions']}/{q['partitions_planned']} "
              f"opened {q['partitions_opened']} {how}")  # fmt: skip
    for query, same in at["equivalent"].items():
        print(f"  {'same answer as unbounded' if same else 'DIFFERENT ANSWER'}: {query}")
    u = at["upsert"]
    print(f"  upsert: {u['rows_per_s']:,.0f} rows/s, median batch of {u['batch_rows']} "
          f"{u['median_batch_ms']:.1f} ms; {u['rows_per_server_cpu_s']:,.0f} rows per server "
          f"CPU s, {u['rows_per_cpu_s']:,.0f} per CPU s with the client", flush=True)  # fmt: skip


def report_ratios(result: dict) -> None:
    """Each size against the first: per query wall and CPU time, the upsert rate by wall
    time and by CPU (on a shared machine the CPU figures are the ones to trust)."""
    sizes = [str(s) for s in result["sizes"] if str(s) in result["at"]]
    base = result["at"][sizes[0]]
    ratios: dict = {}
    for size in sizes[1:]:
        at = result["at"][size]
        wall = {n: at["queries"][n]["median_ms"] / base["queries"][n]["median_ms"]
                for n in base["queries"]}  # fmt: skip
        cpu = {n: at["queries"][n]["cpu_ms"] / max(base["queries"][n]["cpu_ms"], 1e-3)
               for n in base["queries"]}  # fmt: skip
        up, ub = at["upsert"], base["upsert"]
        slow = {k: ub[k] / up[k] for k in ("rows_per_s", "rows_per_server_cpu_s", "rows_per_cpu_s")}
        ratios[size] = {"wall": wall, "cpu": cpu, "upsert_slowdown": slow}
        if size != sizes[-1]:
            continue
        print(f"\n{size} / {sizes[0]} (targets: queries <= 2x, upsert slowdown <= 1.5x)")
        for n in wall:
            print(f"  {n:40s} wall {wall[n]:6.2f}x  cpu {cpu[n]:6.2f}x")
        print("  upsert slowdown: " + ", ".join(f"{k} {v:.2f}x" for k, v in slow.items()))
    result["ratios"] = ratios


if __name__ == "__main__":
    raise SystemExit(main())
