"""Frames of the non-trade stream kinds in Binance's exact combined-stream serialisation.

Used by CSV replay (public-data files) and REST backfill (``/api/v3/aggTrades``,
``/api/v3/klines``), so a record that did not come from the WebSocket is byte-for-byte the
frame the WebSocket would have sent: no whitespace, Binance's field order.

Times are written exactly as given, in the unit of the source (epoch ms, or µs for
public-data files from 2025 on and ``timeUnit=MICROSECOND`` streams; ``MICROS_FROM`` in
``cryptoflow.core.streams`` tells them apart downstream). Prices and quantities are written as
the exact decimal strings given. The trade kind's builder is ``ingestion.frames.trade_frame``.

Every value is checked before it is written (integers, decimal strings, booleans, an
alphanumeric symbol), so a builder never emits invalid JSON: a bad value is a ``ValueError``
naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_DECIMAL = re.compile(r"^\d+(?:\.\d+)?$")
_SYMBOL = re.compile(r"^[A-Za-z0-9]{1,20}$")
_INTERVAL = re.compile(r"^\d+[smhdwM]$")
_BOOLS = {"true": True, "false": False}


def _int(name: str, value: object) -> int:
    """``value`` as an int: an int (not a bool), or a string of digits (``-1`` allowed)."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text.startswith("-") else text
        if digits.isascii() and digits.isdigit():
            return int(text)
    raise ValueError(f"{name}: expected an integer, got {value!r}")


def _dec(name: str, value: object) -> str:
    """``value`` as the exact decimal string given (an int is written as its digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and _DECIMAL.match(value.strip()):
        return value.strip()
    raise ValueError(f"{name}: expected a decimal string, got {value!r}")


def _bool(name: str, value: object) -> bool:
    """``value`` as a bool: a bool, or ``true`` / ``false`` in any case (CSV ``True``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOLS:
        return _BOOLS[value.strip().lower()]
    raise ValueError(f"{name}: expected true/false, got {value!r}")


def _symbol(symbol: str) -> str:
    if not isinstance(symbol, str) or not _SYMBOL.match(symbol):
        raise ValueError(f"symbol: expected 1-20 letters/digits, got {symbol!r}")
    return symbol.upper()


def _js(value: bool) -> str:
    return "true" if value else "false"


def agg_trade_frame(
    symbol: str,
    agg_id: int,
    price: str,
    qty: str,
    first_id: int,
    last_id: int,
    trade_time: int,
    is_buyer_maker: bool,
    is_best_match: bool = True,
    event_time: int | None = None,
) -> bytes:
    """A ``<symbol>@aggTrade`` combined-stream frame; ``E`` defaults to ``trade_time``.

    ``{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":..,"s":"BTCUSDT","a":..,
    "p":"..","q":"..","f":..,"l":..,"T":..,"m":..,"M":..}}``
    """
    sym = _symbol(symbol)
    t = _int("T", trade_time)
    e = t if event_time is None else _int("E", event_time)
    data = (
        f'{{"e":"aggTrade","E":{e},"s":"{sym}","a":{_int("a", agg_id)},'
        f'"p":"{_dec("p", price)}","q":"{_dec("q", qty)}",'
        f'"f":{_int("f", first_id)},"l":{_int("l", last_id)},"T":{t},'
        f'"m":{_js(_bool("m", is_buyer_maker))},"M":{_js(_bool("M", is_best_match))}}}'
    )
    return f'{{"stream":"{sym.lower()}@aggTrade","data":{data}}}'.encode()


def rest_agg_trade_frame(symbol: str, item: Mapping[str, object]) -> bytes:
    """The frame of one REST ``/api/v3/aggTrades`` item ``{"a","p","q","f","l","T","m","M"}``
    (``M`` defaults to true when absent); a missing key is a ``ValueError``."""
    missing = [k for k in ("a", "p", "q", "f", "l", "T", "m") if k not in item]
    if missing:
        raise ValueError(f"aggTrades item without {', '.join(missing)}: {dict(item)!r}")
    return agg_trade_frame(
        symbol,
        _int("a", item["a"]),
        _dec("p", item["p"]),
        _dec("q", item["q"]),
        _int("f", item["f"]),
        _int("l", item["l"]),
        _int("T", item["T"]),
        _bool("m", item["m"]),
        _bool("M", item.get("M", True)),
    )


def kline_frame(
    symbol: str,
    row: Sequence[object],
    interval: str = "1m",
    event_time: int | None = None,
    closed: bool = True,
) -> bytes:
    """A ``<symbol>@kline_<interval>`` frame from a REST ``/api/v3/klines`` array or a
    public-data klines CSV row ``[open_time, o, h, l, c, v, close_time, q, n, V, Q, ignore]``
    (the trailing ``ignore`` may be absent); ``E`` defaults to the close time.

    Neither source carries the first/last trade id of the kline, so ``f`` and ``L`` are
    written as ``-1`` (Binance's own "no trade" value): reconciliation cannot compare trade id
    ranges for klines that came from REST or CSV, only prices, volumes and trade counts.
    ``B`` (Binance's ignored field) is ``"0"``.

    ``{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":..,"s":"BTCUSDT","k":{"t":..,
    "T":..,"s":"BTCUSDT","i":"1m","f":-1,"L":-1,"o":"..","c":"..","h":"..","l":"..","v":"..",
    "n":..,"x":true,"q":"..","V":"..","Q":"..","B":"0"}}}``
    """
    sym = _symbol(symbol)
    if not isinstance(interval, str) or not _INTERVAL.match(interval):
        raise ValueError(f"interval: expected e.g. 1m, 1h, 1d, got {interval!r}")
    if len(row) not in (11, 12):
        raise ValueError(f"kline row: {len(row)} columns, expected 12 (or 11 without ignore)")
    t_open, o, h, low, c, v, t_close, q, n, vb, qb = row[:11]
    start, end = _int("t", t_open), _int("T", t_close)
    e = end if event_time is None else _int("E", event_time)
    k = (
        f'{{"t":{start},"T":{end},"s":"{sym}","i":"{interval}","f":-1,"L":-1,'
        f'"o":"{_dec("o", o)}","c":"{_dec("c", c)}","h":"{_dec("h", h)}",'
        f'"l":"{_dec("l", low)}","v":"{_dec("v", v)}","n":{_int("n", n)},'
        f'"x":{_js(_bool("x", closed))},"q":"{_dec("q", q)}","V":"{_dec("V", vb)}",'
        f'"Q":"{_dec("Q", qb)}","B":"0"}}'
    )
    data = f'{{"e":"kline","E":{e},"s":"{sym}","k":{k}}}'
    return f'{{"stream":"{sym.lower()}@kline_{interval}","data":{data}}}'.encode()
