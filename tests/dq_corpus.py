"""A corpus of bad (and tricky-but-valid) raw Kafka frames, each with where it must land.

``corpus(symbols, first_id)`` builds the frames for two configured symbols; ``expect`` is the
expectation name the frame must be quarantined under (it may fail others too), or ``None``
when the frame is a valid trade that must reach silver (extra fields, bare payload).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

DAY_MS = 86_400_000
MS_2016 = 1_464_739_200_000  # 2016-06-01T00:00:00Z


@dataclass(frozen=True)
class Case:
    kind: str
    key: bytes | None
    value: bytes
    expect: str | None  # expectation name in quarantine; None: must land in silver
    trade_id: int | None = None  # the (symbol, trade_id) it carries, when it has one
    symbol: str | None = None


def payload(symbol: str, trade_id: int, t_ms: int, **changes) -> dict:
    p = {"e": "trade", "E": t_ms + 3, "s": symbol, "t": trade_id, "p": "90000.01000000",
         "q": "0.00100000", "T": t_ms, "m": trade_id % 2 == 0, "M": True}  # fmt: skip
    for k, v in changes.items():
        if v is _DROP:
            p.pop(k, None)
        else:
            p[k] = v
    return p


_DROP = object()


def wrap(p: dict, stream: str | None = None) -> bytes:
    name = stream if stream is not None else f"{str(p.get('s', '')).lower()}@trade"
    return json.dumps({"stream": name, "data": p}, separators=(",", ":")).encode()


def corpus(symbols: list[str], first_id: int = 1_000, now_ms: int | None = None) -> list[Case]:
    """Every kind of bad input (and two valid oddities), ids from ``first_id`` up."""
    a, b = symbols[0], symbols[1]
    now = now_ms or int(time.time() * 1000)
    ids = iter(range(first_id, first_id + 1_000))
    cases: list[Case] = []

    def add(kind, expect, value=None, key=None, symbol=a, **changes):
        tid = next(ids)
        if value is None:
            value = wrap(payload(symbol, tid, now - 1_000, **changes))
        cases.append(Case(kind, key if key is not None else symbol.encode(), value, expect,
                          tid, symbol))  # fmt: skip

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
    cases.append(Case("bare payload without wrapper (must pass)", b.encode(), json.dumps(
        payload(b, tid, now - 1_000)).encode(), None, tid, b))  # fmt: skip
    return cases


def duplicate_of(case: Case) -> Case:
    """The same frame again: the second copy must be quarantined as a duplicate."""
    return Case("duplicate trade", case.key, case.value, "trade_unique", case.trade_id, case.symbol)
