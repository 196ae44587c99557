"""``cryptoflow reconcile``: our 1 m candles against the exchange's klines, minute by minute."""

from __future__ import annotations

import argparse
import json

from cryptoflow.core.config import Settings

STATUSES = ("match", "mismatch", "missing_exchange", "missing_ours")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconcile",
        help="compare our 1 m candles with the exchange's klines (exit 1 on any mismatch)",
        description=(
            "List the reconciled minutes: every closed 1 m candle computed from our trades "
            "against the exchange's closed 1 m kline (kline_1m stream), field by field: open, "
            "high, low, close, volume, quote_volume (ours rounded half-even to 8 decimals), "
            "trades, taker buy volumes, first/last trade id (not compared when the exchange "
            "gives -1). Each minute's status is match, mismatch (the differing fields with "
            "both values), missing_exchange or missing_ours; aggregate trades that disagree "
            "with their trades are listed after the minutes. A summary line ends the output. "
            "Exit status: 0 when every minute in range matches and no aggregate disagrees, "
            "1 when any does not (a mismatch or a minute missing on either side), 2 on an "
            "error. See docs/gold.md."
        ),
    )
    p.add_argument(
        "--since", default="1h", metavar="DURATION|TIMESTAMP",
        help="minutes from this far back (90s, 30m, 2h, 1d) or from this ISO timestamp "
        "(UTC unless zoned); default 1h",
    )  # fmt: skip
    p.add_argument("--symbol", action="append", default=[], metavar="S",
                   help="only this symbol (repeatable)")  # fmt: skip
    p.add_argument("--status", choices=STATUSES,
                   help="list only minutes of this status (the summary covers all)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    p.set_defaults(handler=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from cryptoflow.core.db import connect
    from cryptoflow.core.services.postgres import reader_dsn
    from pipelines.ops import reconciliation as rec
    from pipelines.ops.render import json_value, render

    since = rec.parse_since(args.since)
    symbols = [s.upper() for s in args.symbol]
    conn = connect(reader_dsn(settings))
    try:
        with conn, conn.cursor() as cur:
            counts = rec.summary(cur, since, symbols)
            rows = rec.minutes(cur, since, symbols, args.status)
            aggs = rec.aggregates(cur, since, symbols) if args.status in (None, "mismatch") else []
    finally:
        conn.close()
    if args.json:
        doc = {
            "since": since.isoformat(),
            "minutes": [{k: json_value(v) for k, v in r.items()} for r in rows],
            "aggregates": [{k: json_value(v) for k, v in a.items()} for a in aggs],
            "summary": counts,
            "all_match": rec.all_match(counts),
        }
        print(json.dumps(doc, indent=2))
    else:
        table = [(r["minute"], r["symbol"], r["status"], rec.describe(r["differences"]),
                  r["checked_at"]) for r in rows]  # fmt: skip
        print(render(("minute", "symbol", "status", "differences", "checked_at"), table))
        if aggs:
            print()
            agg_rows = [
                (a["symbol"], a["agg_trade_id"], f"{a['first_trade_id']}..{a['last_trade_id']}",
                 rec.describe(a["differences"]))
                for a in aggs
            ]  # fmt: skip
            print(render(("symbol", "aggregate", "trades", "differences"), agg_rows))
        print()
        print(f"since {since.isoformat(timespec='seconds')}: {rec.summary_line(counts)}")
    return 0 if rec.all_match(counts) else 1
