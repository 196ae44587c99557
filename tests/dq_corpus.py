"""A corpus of bad (and tricky-but-valid) raw Kafka frames of every stream kind, each with
where it must land.

``corpus(symbols, first_id, now_ms)`` builds the frames for two configured symbols and every
stream kind of the registry (``cryptoflow.core.streams``). Each ``Case`` carries its stream
kind (``kind``: the topic it is produced to) and ``expect``: the rule name it must be
quarantined under (it may fail others too), or ``None`` when the frame is valid and must reach
its serving table and Delta silver (extra fields, bare payload, µs times...); a ``live`` case
(an open kline) is valid but final only in PostgreSQL: served, never in silver.
``valid(kind, symbol, n, now_ms)`` is the n-th plain valid record of a kind, to surround the
bad ones; ``duplicate_of`` repeats a record, which must be quarantined under the kind's unique
rule.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

DAY_MS = 86_400_000
MINUTE_MS = 60_000
MS_2016 = 1_464_739_200_000  # 2016-06-01T00:00:00Z, on a minute
#: Valid klines of record number n open (KLINE_SPAN - n) minutes before the current minute.
KLINE_SPAN = 2_000
#: The rule a repeated record fails, per stream kind (its suite's unique rule).
UNIQUE_RULE = {
    "trade": "trade_unique",
    "aggTrade": "agg_unique",
    "kline_1m": "kline_unique",
    "bookTicker": "book_unique",
}


@dataclass(frozen=True)
class Case:
    name: str  # what the frame is
    kind: str  # stream kind name (registry): the topic it goes to
    key: bytes | None
    value: bytes
    expect: str | None  # rule name in quarantine; None: valid, must be served
    symbol: str | None = None
    record_id: int | None = None  # the kind's record id it carries (Entity.record_id)
    live: bool = False  # valid but not final (open kline): PostgreSQL only, not silver
    micros: tuple[tuple[str, int], ...] = ()  # (silver column, exact epoch µs) to check


_DROP = object()


def _edit(d: dict, changes: dict) -> dict:
    for k, v in changes.items():
        if v is _DROP:
            d.pop(k, None)
        else:
            d[k] = v
    return d


def payload(symbol: str, trade_id: int, t_ms: int, **changes) -> dict:
    """A Binance ``@trade`` payload; ``changes`` set (or ``_DROP``) fields."""
    p = {"e": "trade", "E": t_ms + 3, "s": symbol, "t": trade_id, "p": "90000.01000000",
         "q": "0.00100000", "T": t_ms, "m": trade_id % 2 == 0, "M": True}  # fmt: skip
    return _edit(p, changes)


def agg_payload(symbol: str, agg_id: int, t_ms: int, **changes) -> dict:
    """A Binance ``@aggTrade`` payload covering trades 10·id .. 10·id+2."""
    p = {"e": "aggTrade", "E": t_ms + 3, "s": symbol, "a": agg_id, "p": "90000.01000000",
         "q": "0.25000000", "f": agg_id * 10, "l": agg_id * 10 + 2, "T": t_ms,
         "m": agg_id % 2 == 0, "M": True}  # fmt: skip
    return _edit(p, changes)


def kline_open(now_ms: int, n: int) -> int:
    """Open time (ms) of the kline of record number ``n``: whole minutes in the past."""
    return (now_ms // MINUTE_MS - (KLINE_SPAN - n)) * MINUTE_MS


def kline_payload(
    symbol: str, open_ms: int, k: dict | None = None, top: dict | None = None
) -> dict:
    """A closed Binance ``@kline_1m`` payload (3 trades, ids 10·minute..+2); ``k`` edits the
    kline object, ``top`` the payload around it."""
    first = open_ms // MINUTE_MS * 10
    obj = {"t": open_ms, "T": open_ms + MINUTE_MS - 1, "s": symbol, "i": "1m", "f": first,
           "L": first + 2, "o": "100.00000000", "c": "100.50000000", "h": "101.00000000",
           "l": "99.00000000", "v": "2.00000000", "n": 3, "x": True, "q": "200.50000000",
           "V": "1.00000000", "Q": "100.20000000", "B": "0"}  # fmt: skip
    p = {"e": "kline", "E": open_ms + MINUTE_MS, "s": symbol, "k": _edit(obj, k or {})}
    return _edit(p, top or {})


def book_payload(symbol: str, update_id: int, **changes) -> dict:
    """A Binance ``@bookTicker`` payload (no ``e``, no event time)."""
    p = {"u": update_id, "s": symbol, "b": "90000.00000000", "B": "1.50000000",
         "a": "90000.10000000", "A": "0.75000000"}  # fmt: skip
    return _edit(p, changes)


def wrap(p: dict, stream: str | None = None, suffix: str = "trade") -> bytes:
    """The combined-stream frame of ``p``; the stream name defaults to its symbol's."""
    name = stream if stream is not None else f"{str(p.get('s', '')).lower()}@{suffix}"
    return json.dumps({"stream": name, "data": p}, separators=(",", ":")).encode()


def bare(p: dict) -> bytes:
    """``p`` without the combined-stream wrapper (a raw ``/ws/<stream>`` message)."""
    return json.dumps(p, separators=(",", ":")).encode()


def valid(kind: str, symbol: str, n: int, now_ms: int) -> Case:
    """The n-th plain valid record of ``kind`` for ``symbol`` (record id n, or the minute of
    ``kline_open(now_ms, n)``)."""
    t = now_ms - 2_000 + n
    if kind == "trade":
        value, rid = wrap(payload(symbol, n, t)), n
    elif kind == "aggTrade":
        value, rid = wrap(agg_payload(symbol, n, t), suffix="aggTrade"), n
    elif kind == "kline_1m":
        rid = kline_open(now_ms, n)
        value = wrap(kline_payload(symbol, rid), suffix="kline_1m")
    elif kind == "bookTicker":
        value, rid = wrap(book_payload(symbol, n), suffix="bookTicker"), n
    else:
        raise ValueError(f"no valid frame for stream kind {kind}")
    return Case("valid", kind, symbol.encode(), value, None, symbol, rid)


def trade_cases(symbols: list[str], first_id: int, now: int) -> list[Case]:
    """Every kind of bad trade frame (and two valid oddities), ids from ``first_id`` up."""
    a, b = symbols[0], symbols[1]
    ids = iter(range(first_id, first_id + 1_000))
    cases: list[Case] = []

    def add(name, expect, value=None, key=None, symbol=a, **changes):
        tid = next(ids)
        if value is None:
            value = wrap(payload(symbol, tid, now - 1_000, **changes))
        cases.append(Case(name, "trade", key if key is not None else symbol.encode(), value,
                          expect, symbol, tid))  # fmt: skip

    good = wrap(payload(a, first_id + 999, now - 1_000))
    add("invalid JSON", "frame_parses", value=b'{"stream": "x@trade", "data": {e: trade}}')
    add("truncated frame", "frame_parses", value=good[: len(good) // 2])
    add("empty frame", "frame_parses", value=b"")
    add("bytes that are not UTF-8", "frame_parses", value=b'{"stream":"\xff\xfe\xfd"}')
    add("oversize frame (700 kB JSON array)", "frame_parses",
        value=b"[" + b",".join(b"1234567" for _ in range(90_000)) + b"]")  # fmt: skip
    add("JSON that is not an object", "frame_parses", value=b'"trade"')
    add("missing price field", "frame_parses", p=_DROP)
    add("missing symbol field", "frame_parses", s=_DROP)
    add("missing trade time field", "frame_parses", T=_DROP)
    add("price null", "frame_parses", p=None)
    add("wrong type: trade id a string", "frame_parses", t="12ab")
    add("wrong type: buyer-maker flag a string", "frame_parses", m="yes")
    add("wrong type: event time a float", "frame_parses", E=1.5e12 + 0.5)
    add("price NaN", "frame_parses", p="NaN")
    add("price with more than 8 decimals", "frame_parses", p="1.123456789")
    add("quantity overflowing decimal(18,8)", "frame_parses", q="1e30")
    add("negative price", "price_positive", p="-1.00000000")
    add("zero price", "price_positive", p="0.00000000")
    add("absurdly large price", "price_not_absurd", p="9999999999.00000000")
    add("negative quantity", "quantity_positive", q="-0.50000000")
    add("zero quantity", "quantity_positive", q="0")
    add("absurdly large quantity", "quantity_not_absurd", q="5000000000")
    add("negative trade id", "trade_id_non_negative", t=-7)
    add("unknown symbol", "symbol_known", symbol="DOGEUSDT")
    add("lower-case symbol", "symbol_well_formed", value=wrap(
        payload(a.lower(), first_id + 998, now - 1_000), stream=f"{a.lower()}@trade"))  # fmt: skip
    add("trade time in the future", "trade_time_not_in_future",
        T=now + DAY_MS, E=now + DAY_MS + 3)  # fmt: skip
    add("trade time before 2017", "trade_time_not_before_2017", T=MS_2016, E=MS_2016 + 3)
    add("event time 5 s before trade time", "event_not_before_trade", E=now - 6_000)
    add("non-trade event (aggTrade)", "event_type_is_trade", e="aggTrade")
    add("kline event", "event_type_is_trade", value=json.dumps(
        {"stream": f"{a.lower()}@kline_1m", "data": {"e": "kline", "E": now, "s": a,
         "k": {"t": now, "o": "1.0"}}}).encode())  # fmt: skip
    add("combined wrapper without data", "frame_parses", value=b'{"stream":"x@trade"}')
    add("wrapper whose data is a string", "frame_parses",
        value=b'{"stream":"x@trade","data":"trade"}')  # fmt: skip
    add("subscription reply", "frame_parses", value=b'{"result":null,"id":1}')
    other_stream = f"{b.lower()}@trade"
    add("stream name and symbol disagree", "stream_matches_symbol",
        value=wrap(payload(a, first_id + 997, now - 1_000), stream=other_stream))  # fmt: skip
    # Valid oddities: they must reach silver.
    add("extra fields (must pass)", None, x=1, extra={"note": "fine"}, M=False)
    tid = next(ids)
    cases.append(Case("bare payload without wrapper (must pass)", "trade", b.encode(),
                      bare(payload(b, tid, now - 1_000)), None, b, tid))  # fmt: skip
    return cases


def agg_trade_cases(symbols: list[str], first_id: int, now: int) -> list[Case]:
    """Bad ``@aggTrade`` frames (and two valid oddities), aggregate ids from ``first_id`` up."""
    a, b = symbols[0], symbols[1]
    ids = iter(range(first_id, first_id + 1_000))
    cases: list[Case] = []

    def add(name, expect, value=None, symbol=a, stream=None, **changes):
        aid = next(ids)
        if value is None:
            value = wrap(agg_payload(symbol, aid, now - 1_000, **changes), stream, "aggTrade")
        cases.append(Case(name, "aggTrade", symbol.encode(), value, expect, symbol, aid))

    add("invalid JSON", "agg_frame_parses", value=b'{"stream":"x@aggTrade","data":{e:aggTrade}}')
    add("missing aggregate id", "agg_frame_parses", a=_DROP)
    add("missing last trade id", "agg_frame_parses", l=_DROP)
    add("wrong type: first trade id a string", "agg_frame_parses", f="12ab")
    add("price NaN", "agg_frame_parses", p="NaN")
    add("quantity with more than 8 decimals", "agg_frame_parses", q="0.123456789")
    add("non-aggTrade event (trade)", "agg_event_type", e="trade")
    add("stream name of another symbol", "agg_stream_matches_symbol",
        stream=f"{b.lower()}@aggTrade")  # fmt: skip
    add("first trade id above last trade id", "agg_trade_range_ordered", f=500, l=499)
    add("negative first trade id", "agg_first_trade_id_non_negative", f=-3, l=-1)
    add("negative aggregate id", "agg_id_non_negative", a=-7)
    add("zero price", "agg_price_positive", p="0.00000000")
    add("negative quantity", "agg_quantity_positive", q="-0.50000000")
    add("absurdly large price", "agg_price_not_absurd", p="9999999999.00000000")
    add("absurdly large quantity", "agg_quantity_not_absurd", q="5000000000")
    add("unknown symbol", "agg_symbol_known", symbol="DOGEUSDT")
    add("lower-case symbol", "agg_symbol_well_formed", symbol=a.lower())
    add("trade time a day in the future", "agg_trade_time_not_in_future",
        T=now + DAY_MS, E=now + DAY_MS + 3)  # fmt: skip
    add("trade time before 2017", "agg_trade_time_not_before_2017", T=MS_2016, E=MS_2016 + 3)
    add("event time 5 s before trade time", "agg_event_not_before_trade", E=now - 6_000)
    # Valid oddities.
    aid = next(ids)
    cases.append(Case("bare payload without wrapper (must pass)", "aggTrade", b.encode(),
                      bare(agg_payload(b, aid, now - 1_000)), None, b, aid))  # fmt: skip
    aid = next(ids)
    t_us = (now - 1_000) * 1_000 + 123  # µs, with a sub-millisecond part
    value = wrap(agg_payload(a, aid, 0, T=t_us, E=t_us + 3_456), suffix="aggTrade")
    times = (("trade_time", t_us), ("event_time", t_us + 3_456))
    cases.append(Case("µs times (must pass, exact to the µs)", "aggTrade", a.encode(), value,
                      None, a, aid, micros=times))  # fmt: skip
    return cases


def kline_cases(symbols: list[str], first_id: int, now: int) -> list[Case]:
    """Bad ``@kline_1m`` frames, two valid oddities and one open kline, each in its own minute
    (record numbers from ``first_id`` up: ``kline_open``)."""
    a, b = symbols[0], symbols[1]
    numbers = iter(range(first_id, first_id + 1_000))
    cases: list[Case] = []

    def add(name, expect, value=None, symbol=a, stream=None, k=None, top=None, live=False):
        t = kline_open(now, next(numbers))
        k = {key: v(t) if callable(v) else v for key, v in (k or {}).items()}
        top = {key: v(t) if callable(v) else v for key, v in (top or {}).items()}
        if value is None:
            value = wrap(kline_payload(symbol, t, k, top), stream, "kline_1m")
        cases.append(Case(name, "kline_1m", symbol.encode(), value, expect, symbol, t, live))

    future = (now + DAY_MS) // MINUTE_MS * MINUTE_MS
    add("truncated frame", "kline_frame_parses",
        value=wrap(kline_payload(a, kline_open(now, 0)), suffix="kline_1m")[:150])  # fmt: skip
    add("missing open price k.o", "kline_frame_parses", k={"o": _DROP})
    add("missing closed flag k.x", "kline_frame_parses", k={"x": _DROP})
    add("wrong type: trade count a string", "kline_frame_parses", k={"n": "3x"})
    add("high with more than 8 decimals", "kline_frame_parses", k={"h": "101.000000001"})
    add("k is not a JSON object", "kline_frame_parses", top={"k": "kline"})
    add("non-kline event (trade)", "kline_event_type", top={"e": "trade"})
    add("stream name of another symbol", "kline_stream_matches_symbol",
        stream=f"{b.lower()}@kline_1m")  # fmt: skip
    add("5m interval", "kline_interval_known", stream=f"{a.lower()}@kline_5m", k={"i": "5m"})
    add("high below low", "kline_high_low_bracket", k={"h": "98.00000000"})
    add("close time not open time + 1 minute", "kline_close_time_is_open_plus_interval",
        k={"T": lambda t: t + 29_999})  # fmt: skip
    add("open time not on a minute", "kline_open_time_on_minute",
        k={"t": lambda t: t + 30_000, "T": lambda t: t + 30_000 + MINUTE_MS - 1})  # fmt: skip
    add("taker buy volume above volume", "kline_taker_buy_within_volume", k={"V": "3.00000000"})
    add("trade ids do not match the trade count", "kline_trade_ids_match_count",
        k={"L": lambda t: t // MINUTE_MS * 10 + 5})  # fmt: skip
    add("negative volume", "kline_volume_non_negative", k={"v": "-2.00000000"})
    add("negative trade count", "kline_trades_non_negative", k={"n": -1})
    add("zero open price", "kline_open_positive", k={"o": "0.00000000"})
    add("unknown symbol", "kline_symbol_known", symbol="DOGEUSDT")
    add("open time a day in the future", "kline_open_time_not_in_future",
        k={"t": future, "T": future + MINUTE_MS - 1}, top={"E": future + MINUTE_MS})  # fmt: skip
    add("open time before 2017", "kline_open_time_not_before_2017",
        k={"t": MS_2016, "T": MS_2016 + MINUTE_MS - 1}, top={"E": MS_2016 + MINUTE_MS})  # fmt: skip
    # Valid oddities.
    flat = "100.50000000"
    add("minute without trades: n 0, ids -1 (must pass)", None, symbol=b, k={
        "n": 0, "f": -1, "L": -1, "o": flat, "h": flat, "l": flat, "c": flat,
        "v": "0", "q": "0", "V": "0", "Q": "0"})  # fmt: skip
    t = kline_open(now, next(numbers))
    t_us = t * 1_000
    value = wrap(kline_payload(a, 0, {"t": t_us, "T": t_us + 59_999_999},
                               {"E": t_us + 60_000_007}), suffix="kline_1m")  # fmt: skip
    cases.append(Case("µs times (must pass, exact to the µs)", "kline_1m", a.encode(), value,
                      None, a, t, micros=(("open_time", t_us), ("close_time", t_us + 59_999_999),
                                          ("event_time", t_us + 60_000_007))))  # fmt: skip
    add("open kline, x false (live: PostgreSQL only)", None, symbol=b, k={"x": False},
        top={"E": lambda t: t + 30_000}, live=True)  # fmt: skip
    return cases


def book_ticker_cases(symbols: list[str], first_id: int, now: int) -> list[Case]:
    """Bad ``@bookTicker`` frames (and two valid oddities), update ids from ``first_id`` up."""
    a, b = symbols[0], symbols[1]
    ids = iter(range(first_id, first_id + 1_000))
    cases: list[Case] = []

    def add(name, expect, value=None, symbol=a, stream=None, **changes):
        uid = next(ids)
        if value is None:
            value = wrap(book_payload(symbol, uid, **changes), stream, "bookTicker")
        cases.append(Case(name, "bookTicker", symbol.encode(), value, expect, symbol, uid))

    add("JSON array, not an object", "book_frame_parses", value=b"[1,2,3]")
    add("missing best bid price", "book_frame_parses", b=_DROP)
    add("missing update id", "book_frame_parses", u=_DROP)
    add("wrong type: update id a string", "book_frame_parses", u="12ab")
    add("bid price with more than 8 decimals", "book_frame_parses", b="90000.000000001")
    add("ask quantity overflowing decimal(18,8)", "book_frame_parses", A="1e30")
    add("stream name of another symbol", "book_stream_matches_symbol",
        stream=f"{b.lower()}@bookTicker")  # fmt: skip
    add("crossed book: bid above ask", "book_not_crossed", b="90001.00000000")
    add("locked book: bid equals ask", "book_not_crossed", b="90000.10000000")
    add("zero bid price", "book_bid_price_positive", b="0.00000000")
    add("negative ask price", "book_ask_price_positive", a="-1.00000000")
    add("negative bid quantity", "book_bid_quantity_non_negative", B="-1.00000000")
    add("negative ask quantity", "book_ask_quantity_non_negative", A="-0.50000000")
    add("absurdly large ask price", "book_ask_price_not_absurd", a="9999999999.00000000")
    add("negative update id", "book_update_id_non_negative", u=-5)
    add("unknown symbol", "book_symbol_known", symbol="DOGEUSDT")
    add("lower-case symbol", "book_symbol_well_formed", symbol=a.lower())
    # Valid oddities.
    uid = next(ids)
    value = bare(book_payload(b, uid))
    cases.append(Case("bare payload, as /ws/<symbol>@bookTicker sends it (must pass)",
                      "bookTicker", b.encode(), value, None, b, uid))  # fmt: skip
    add("futures-style extra fields e, E, T and zero bid quantity (must pass)", None,
        e="bookTicker", E=now - 900, T=now - 901, B="0.00000000")  # fmt: skip
    return cases


def corpus(symbols: list[str], first_id: int = 1_000, now_ms: int | None = None) -> list[Case]:
    """Every kind of bad input (and the valid oddities) of every stream kind, record ids from
    ``first_id`` up."""
    now = now_ms or int(time.time() * 1000)
    return [
        *trade_cases(symbols, first_id, now),
        *agg_trade_cases(symbols, first_id, now),
        *kline_cases(symbols, first_id, now),
        *book_ticker_cases(symbols, first_id, now),
    ]


def duplicate_of(case: Case) -> Case:
    """The same frame again: the later copy must be quarantined under the kind's unique rule."""
    return Case(f"duplicate {case.kind}", case.kind, case.key, case.value,
                UNIQUE_RULE[case.kind], case.symbol, case.record_id)  # fmt: skip
