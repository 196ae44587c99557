"""Simulator logic without I/O: market model, ids, frames, control requests, REST, faults."""

from __future__ import annotations

import itertools
import json
import statistics
from collections import Counter
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest

from cryptoflow.cli import build_parser
from cryptoflow.cli.simulate import options_from_args
from cryptoflow.core.errors import ConfigError
from cryptoflow.core.streams import MICROS_FROM as MICROS
from ingestion.simulator import control, frames, read_record
from ingestion.simulator.book import BookMaker
from ingestion.simulator.faults import IdSkipper, KlineFaulter, MalformedInjector
from ingestion.simulator.feed import SymbolFeed
from ingestion.simulator.history import History
from ingestion.simulator.ids import BLOCK, FIRST_ID, IdStore
from ingestion.simulator.klines import KlineBuilder, KlineEvent, format_quote, klines_between
from ingestion.simulator.market import format_units, spec_for, split_rate
from ingestion.simulator.options import SimulatorOptions
from ingestion.simulator.outbox import Outbox
from ingestion.simulator.record import Recorder
from ingestion.simulator.rest import RestApi, WeightLimiter, quote_qty
from tests.conftest import make_data_dir, make_settings

TRADE_KEYS = ["e", "E", "s", "t", "p", "q", "T", "m", "M"]
AGG_KEYS = ["e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"]


def generate(tmp_path: Path, symbol: str, seed: int, n: int, rate: float = 50.0):
    feed = SymbolFeed(spec_for(symbol), rate, seed, IdStore(tmp_path), 1_700_000_000_000, n)
    trades, aggs = [], []
    feed.take_due(float("inf"), 10 * n, trades, aggs)
    return trades, aggs


# ----- market model
def test_same_seed_same_prices_sizes_and_timing_other_seed_differs(tmp_path):
    def shape(trades):
        t0 = trades[0].time
        return [
            (t.price, t.qty, t.is_buyer_maker, t.time - t0, t.event_time - t.time) for t in trades
        ]

    a, _ = generate(tmp_path / "a", "BTCUSDT", 7, 3000)
    b, _ = generate(tmp_path / "b", "BTCUSDT", 7, 3000)
    c, _ = generate(tmp_path / "c", "BTCUSDT", 8, 3000)
    assert shape(a) == shape(b)
    assert shape(a) != shape(c)


def test_trades_look_like_binance_trades(tmp_path):
    spec = spec_for("BTCUSDT")
    trades, _ = generate(tmp_path, "BTCUSDT", 1, 5000, rate=30.0)
    prices = [Decimal(format_units(t.price)) for t in trades]
    qtys = [Decimal(format_units(t.qty)) for t in trades]
    assert all(
        p % spec.tick_size == 0 and q % spec.step_size == 0 and q > 0
        for p, q in zip(prices, qtys, strict=True)
    )
    assert min(prices) > 80_000 and max(prices) < 100_000  # around the realistic level
    assert [t.id for t in trades] == list(range(FIRST_ID, FIRST_ID + 5000))
    sells = sum(t.is_buyer_maker for t in trades) / len(trades)
    assert 0.35 < sells < 0.65
    median = statistics.median(qtys)
    assert max(qtys) > 20 * median  # heavy tail
    # several trades share one taker order's time (a sweep), as on the exchange
    assert max(Counter(t.time for t in trades).values()) >= 4
    # bursty: trades per second are over-dispersed compared with a Poisson process
    per_s = Counter((t.time - trades[0].time) // 1000 for t in trades)
    counts = [per_s.get(s, 0) for s in range(max(per_s))]
    assert statistics.pvariance(counts) > 2 * statistics.mean(counts)
    # rate: BTC gets its share of the 30/s default, within noise
    span_s = (trades[-1].time - trades[0].time) / 1000
    assert 20 < len(trades) / span_s < 45


def test_other_symbols_get_a_stable_level_between_1_and_100():
    spec = spec_for("SOLUSDT")
    assert spec == spec_for("SOLUSDT")
    assert 1 <= spec.base_price < 100
    assert (spec.base_asset, spec.quote_asset) == ("SOL", "USDT")
    assert split_rate([spec_for("BTCUSDT"), spec_for("ETHUSDT"), spec_for("BNBUSDT")], 30) == {
        "BTCUSDT": pytest.approx(13.5),
        "ETHUSDT": pytest.approx(10.5),
        "BNBUSDT": pytest.approx(6.0),
    }


def test_format_units_gives_binance_8_decimal_strings():
    assert format_units(9000001000000) == "90000.01000000"
    assert format_units(1) == "0.00000001"
    assert quote_qty(400000100, 1200000000) == "48.000012"  # Binance's own example


def test_aggregate_trades_cover_their_trades_exactly(tmp_path):
    trades, aggs = generate(tmp_path, "ETHUSDT", 3, 2000)
    by_id = {t.id: t for t in trades}
    covered = []
    for a in aggs:
        members = [by_id[i] for i in range(a.first_id, a.last_id + 1)]
        assert {(t.price, t.time, t.is_buyer_maker) for t in members} == {
            (a.price, a.time, a.is_buyer_maker)
        }
        assert sum(t.qty for t in members) == a.qty
        covered += [t.id for t in members]
    assert covered == [t.id for t in trades]
    assert [a.id for a in aggs] == list(range(aggs[0].id, aggs[0].id + len(aggs)))
    assert len(aggs) < len(trades)  # some orders swept several trades at one price


def test_payload_fields_and_order_are_binance_s(tmp_path):
    trades, aggs = generate(tmp_path, "BNBUSDT", 1, 50)
    t = json.loads(trades[0].payload)
    assert list(t) == TRADE_KEYS
    assert (t["e"], t["s"], t["M"]) == ("trade", "BNBUSDT", True)
    assert isinstance(t["p"], str) and len(t["p"].split(".")[1]) == 8
    assert t["E"] >= t["T"]
    assert list(json.loads(aggs[0].payload)) == AGG_KEYS
    wrapped = json.loads(frames.combined("bnbusdt@trade", trades[0].payload))
    assert wrapped == {"stream": "bnbusdt@trade", "data": t}


def test_text_frame_encodes_rfc6455_lengths():
    assert frames.text_frame(b"hi") == b"\x81\x02hi"
    assert frames.text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert frames.text_frame(b"x" * 70000)[:10] == b"\x81\x7f" + (70000).to_bytes(8, "big")


def test_malformed_payloads_are_not_trades():
    kinds = [MalformedInjector(2).after_trade() for _ in range(1)]
    assert kinds == [None]
    inj = MalformedInjector(2)
    seen = [inj.after_trade() for _ in range(8)]
    assert seen == [
        None,
        "invalid_json",
        None,
        "not_a_trade",
        None,
        "missing_fields",
        None,
        "invalid_json",
    ]
    assert inj.sent == 4
    with pytest.raises(json.JSONDecodeError):
        json.loads(frames.malformed_payload("invalid_json", "BTCUSDT", 1))
    assert json.loads(frames.malformed_payload("not_a_trade", "BTCUSDT", 1))["e"] != "trade"
    broken = json.loads(frames.malformed_payload("missing_fields", "BTCUSDT", 1))
    assert "t" not in broken and "q" not in broken


# ----- ids
def test_ids_continue_after_a_clean_stop_and_skip_a_block_after_a_crash(tmp_path):
    first = IdStore(tmp_path).sequence("BTCUSDT")
    assert [first.take() for _ in range(3)] == [FIRST_ID, FIRST_ID + 1, FIRST_ID + 2]
    first.release()
    second = IdStore(tmp_path).sequence("BTCUSDT")
    assert second.take() == FIRST_ID + 3
    # second "crashes" (no release): the next run starts after its whole block
    third = IdStore(tmp_path).sequence("BTCUSDT")
    assert third.take() == FIRST_ID + 3 + BLOCK
    assert IdStore(tmp_path).sequence("ETHUSDT").take() == FIRST_ID  # per symbol


def test_two_runs_sharing_a_data_dir_never_hand_out_the_same_id(tmp_path):
    store = IdStore(tmp_path, block=10)
    a, b = store.sequence("BTCUSDT"), store.sequence("BTCUSDT")
    ids = (
        [a.take() for _ in range(25)]
        + [b.take() for _ in range(25)]
        + [a.take() for _ in range(25)]
    )
    assert len(ids) == len(set(ids))
    a.release()
    b.release()
    assert store.sequence("BTCUSDT").take() > max(ids)


# ----- control requests
def test_subscribe_list_unsubscribe_replies():
    subs = control.Subscriptions(combined=True, streams=["btcusdt@trade"])
    req = {"method": "SUBSCRIBE", "params": ["ethusdt@trade", "bnbusdt@aggTrade"], "id": 1}
    assert control.handle(json.dumps(req), subs) == {"result": None, "id": 1}
    listed = control.handle('{"method":"LIST_SUBSCRIPTIONS","id":3}', subs)
    assert listed == {"result": ["btcusdt@trade", "ethusdt@trade", "bnbusdt@aggTrade"], "id": 3}
    unsub = {"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 312}
    assert control.handle(json.dumps(unsub), subs) == {"result": None, "id": 312}
    assert subs.streams == ["ethusdt@trade", "bnbusdt@aggTrade"]
    assert control.handle('{"method":"GET_PROPERTY","params":["combined"],"id":2}', subs) == {
        "result": True,
        "id": 2,
    }
    assert control.handle('{"method":"SET_PROPERTY","params":["combined",false],"id":5}', subs) == {
        "result": None,
        "id": 5,
    }
    assert subs.combined is False


@pytest.mark.parametrize(
    ("request_text", "code", "msg"),
    [
        ("{not json", 3, "Invalid JSON: expected value at line 1 column 2"),
        (
            '{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":-1}',
            2,
            "Invalid request: request ID must be an unsigned integer",
        ),
        (
            '{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":true}',
            2,
            "Invalid request: request ID must be an unsigned integer",
        ),
        (
            '{"method":"FOO","id":1}',
            2,
            "Invalid request: unknown variant `FOO`, expected one of `SUBSCRIBE`",
        ),
        ('{"params":[],"id":1}', 2, "Invalid request: missing field `method`"),
        ('{"method":"LIST_SUBSCRIPTIONS","id":1,"x":1}', 2, "Invalid request: too many parameters"),
        (
            '{"method":"SET_PROPERTY","params":["combined","yes"],"id":1}',
            1,
            "Invalid value type: expected Boolean",
        ),
        ('{"method":"GET_PROPERTY","params":["colour"],"id":1}', 0, "Unknown property"),
        (
            '{"method":"GET_PROPERTY","params":[5],"id":1}',
            2,
            "Invalid request: property name must be a string",
        ),
        (
            '{"method":"SUBSCRIBE","params":[7],"id":1}',
            2,
            "Invalid request: stream names must be strings",
        ),
    ],
)
def test_bad_requests_get_binance_error_codes(request_text, code, msg):
    reply = control.handle(request_text, control.Subscriptions(combined=False))
    assert reply["error"]["code"] == code
    assert reply["error"]["msg"].startswith(msg)
    assert set(reply) == {"error", "id"}


def test_stream_paths():
    assert control.streams_from_path("/stream?streams=btcusdt@trade/ethusdt@trade") == (
        True,
        ["btcusdt@trade", "ethusdt@trade"],
    )
    assert control.streams_from_path("/ws/btcusdt@trade") == (False, ["btcusdt@trade"])
    assert control.streams_from_path("/ws") == (False, [])
    assert control.streams_from_path("/api/v3/time") is None


# ----- REST
class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def rest_api(tmp_path: Path, weight_limit: int = 6000, clock=None) -> RestApi:
    trades, aggs = generate(tmp_path, "BTCUSDT", 1, 3000)
    th, ah = History(100_000), History(100_000)
    th.extend(trades)
    ah.extend(aggs)
    return RestApi(
        [spec_for("BTCUSDT")],
        {"BTCUSDT": th},
        {"BTCUSDT": ah},
        weight_limit,
        clock=clock or FakeClock(1_700_000_000.0),
    )


def body(response):
    return json.loads(response.body)


def test_historical_trades_from_id_and_recent_trades(tmp_path):
    api = rest_api(tmp_path)
    r = api.handle(
        f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={FIRST_ID + 10}&limit=1000", "1.2.3.4"
    )
    rows = body(r)
    assert r.status == 200 and len(rows) == 1000
    assert [row["id"] for row in rows] == list(range(FIRST_ID + 10, FIRST_ID + 1010))
    assert list(rows[0]) == [
        "id",
        "price",
        "qty",
        "quoteQty",
        "time",
        "isBuyerMaker",
        "isBestMatch",
    ]
    recent = body(api.handle("/api/v3/trades?symbol=BTCUSDT", "1.2.3.4"))
    assert len(recent) == 500 and recent[-1]["id"] == FIRST_ID + 2999
    assert (
        body(api.handle(f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={FIRST_ID + 5000}", "ip"))
        == []
    )


def test_agg_trades_by_id_and_time(tmp_path):
    api = rest_api(tmp_path)
    first = body(api.handle("/api/v3/aggTrades?symbol=BTCUSDT&limit=3&fromId=3000000001", "ip"))
    assert [a["a"] for a in first] == [FIRST_ID, FIRST_ID + 1, FIRST_ID + 2]
    assert list(first[0]) == ["a", "p", "q", "f", "l", "T", "m", "M"]
    t = first[1]["T"]
    by_time = body(
        api.handle(f"/api/v3/aggTrades?symbol=BTCUSDT&startTime={t}&endTime={t + 10_000}", "ip")
    )
    assert by_time and all(t <= a["T"] <= t + 10_000 for a in by_time)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/v3/trades?symbol=NOPE", 400, -1121),
        ("/api/v3/trades", 400, -1102),
        ("/api/v3/historicalTrades?symbol=BTCUSDT&fromId=abc", 400, -1100),
        ("/api/v3/historicalTrades?symbol=BTCUSDT&limit=1001", 400, -1130),
        ("/api/v3/exchangeInfo?symbol=NOPE", 400, -1121),
        ("/api/v3/depthless", 404, -1000),
    ],
)
def test_rest_errors_are_binance_json(tmp_path, path, status, code):
    r = rest_api(tmp_path).handle(path, "ip")
    assert (r.status, body(r)["code"]) == (status, code)


def test_exchange_info_has_symbol_filters(tmp_path):
    info = body(rest_api(tmp_path).handle("/api/v3/exchangeInfo?symbol=BTCUSDT", "ip"))
    (sym,) = info["symbols"]
    filters = {f["filterType"]: f for f in sym["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
    assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
    assert (sym["baseAsset"], sym["quoteAsset"], sym["status"]) == ("BTC", "USDT", "TRADING")
    assert info["rateLimits"][0]["limit"] == 6000


def test_request_weight_header_and_429_with_retry_after(tmp_path):
    clock = FakeClock(60 * 28_333_334 + 10.0)  # 10 s into a minute
    api = rest_api(tmp_path, weight_limit=60, clock=clock)
    r1 = api.handle("/api/v3/historicalTrades?symbol=BTCUSDT", "10.0.0.1")
    r2 = api.handle("/api/v3/historicalTrades?symbol=BTCUSDT", "10.0.0.1")
    assert (r1.headers["X-MBX-USED-WEIGHT-1M"], r2.headers["X-MBX-USED-WEIGHT-1M"]) == ("25", "50")
    r3 = api.handle("/api/v3/historicalTrades?symbol=BTCUSDT", "10.0.0.1")
    assert r3.status == 429 and body(r3)["code"] == -1003
    assert r3.headers["Retry-After"] == "50"
    assert api.handle("/api/v3/ping", "10.0.0.2").status == 200  # per IP
    clock.t += 20  # did not wait for Retry-After: banned
    r4 = api.handle("/api/v3/ping", "10.0.0.1")
    assert r4.status == 418 and body(r4)["code"] == -1003 and r4.headers["Retry-After"] == "30"
    assert "banned until" in body(r4)["msg"]
    clock.t += 30  # next minute: the window resets
    assert api.handle("/api/v3/historicalTrades?symbol=BTCUSDT", "10.0.0.1").status == 200
    assert WeightLimiter(10, FakeClock(0.0)).charge("ip", 11) == (429, 0, 60)


# ----- faults and options
def test_kline_faulter_picks_every_nth_closed_kline_and_cycles_fields():
    faulter = KlineFaulter(3)
    picked = [faulter.next_field() for _ in range(36)]
    assert picked[:6] == [None, None, "o", None, None, "h"]
    assert [p for p in picked if p] == ["o", "h", "l", "c", "v", "q", "n", "V", "Q", "f", "L", "o"]
    assert KlineFaulter(0).next_field() is None


def test_skipper_holds_back_runs_of_ids_per_symbol():
    sk = IdSkipper(run=2, every=3)
    skipped = [i for i in range(1, 13) if sk.skip("BTCUSDT", i)]
    assert skipped == [4, 5, 9, 10]
    assert [list(r) for r in sk.ranges] == [["BTCUSDT", 4, 5], ["BTCUSDT", 9, 10]]
    assert not IdSkipper(run=0, every=3).skip("BTCUSDT", 1)


def test_options_are_validated_with_the_flag_name():
    settings = make_settings(make_data_dir())
    with pytest.raises(ConfigError, match=r"--rate 0 must be in"):
        SimulatorOptions(rate=0).resolve(settings)
    with pytest.raises(ConfigError, match=r"--drop-every must be positive"):
        SimulatorOptions(drop_every=-1).resolve(settings)
    with pytest.raises(ConfigError, match=r"'BTC-USDT' is not a Binance symbol"):
        SimulatorOptions(symbols=("BTC-USDT",)).resolve(settings)
    resolved = SimulatorOptions().resolve(settings)
    assert (resolved.port, resolved.symbols) == (settings.sim_port, tuple(settings.symbols))


def test_cli_flags_round_trip_to_options(tmp_path):
    opts = SimulatorOptions(
        port=1234, symbols=("BTCUSDT", "SOLUSDT"), seed=9, rate=500.0, max_trades=10,
        record=tmp_path / "r.jsonl", drop_every=2.5, skip_ids=3, skip_every=40,
        malformed_every=7, pong_delay=0.5, shutdown_every=4.0, ping_interval=1.0,
        kline_fault_every=4,
    )  # fmt: skip
    args = build_parser().parse_args(["simulate", *opts.to_cli_args()])
    assert options_from_args(args) == opts


# ----- klines, book tickers, time units, every kind's faults (issue 20)
KLINE_KEYS = ["t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"]
EIGHT = Decimal("0.00000001")


def expected_klines(trades) -> dict[int, dict]:
    """Klines computed independently with Decimal: per minute of T, by trade id."""
    minutes: dict[int, list] = {}
    for t in sorted(trades, key=lambda t: t.id):
        minutes.setdefault(t.time - t.time % 60_000, []).append(t)
    out = {}
    for open_ms, rows in minutes.items():
        p = [Decimal(format_units(t.price)) for t in rows]
        q = [Decimal(format_units(t.qty)) for t in rows]
        buy = [not t.is_buyer_maker for t in rows]
        pq = [a * b for a, b in zip(p, q, strict=True)]

        def dec(x: Decimal) -> str:
            return str(x.quantize(EIGHT, rounding=ROUND_HALF_EVEN))

        out[open_ms] = {
            "o": dec(p[0]), "c": dec(p[-1]), "h": dec(max(p)), "l": dec(min(p)),
            "v": dec(sum(q)), "q": dec(sum(pq)), "n": len(rows),
            "V": dec(sum(x for x, b in zip(q, buy, strict=True) if b)),
            "Q": dec(sum(x for x, b in zip(pq, buy, strict=True) if b)),
            "f": rows[0].id, "L": rows[-1].id,
        }  # fmt: skip
    return out


def test_format_quote_rounds_half_even_to_8_decimals():
    assert format_quote(150_000_000) == "0.00000002"  # 1.5e-8 -> 2e-8
    assert format_quote(250_000_000) == "0.00000002"  # 2.5e-8 -> 2e-8 (even)
    assert format_quote(250_000_001) == "0.00000003"
    assert format_quote(349_999_999) == "0.00000003"
    assert format_quote(9000001000000 * 200000) == "180.00002000"  # 90000.01 * 0.002


def test_klines_are_computed_from_the_trades_incrementally_and_in_one_go(tmp_path):
    trades, _ = generate(tmp_path, "BTCUSDT", 5, 6000, rate=40.0)  # ~150 s: 3+ minutes
    expected = expected_klines(trades)
    first, last = min(expected), max(expected) - 60_000  # the last minute is not complete
    spec = spec_for("BTCUSDT")
    builder = KlineBuilder("BTCUSDT", first, 123)
    closed = []
    for i in range(0, len(trades), 97):  # batches of any size give the same klines
        closed += builder.add(trades[i : i + 97])
    closed += builder.close_until(last + 60_000)
    in_one_go = klines_between("BTCUSDT", trades, first, last, 123)
    assert closed == in_one_go and len(closed) == (last - first) // 60_000 + 1 >= 2
    for k in closed:
        assert k.values() == expected[k.open_ms]
        data = json.loads(k.payload(k.open_ms + 60_001, closed=True))
        assert list(data) == ["e", "E", "s", "k"] and list(data["k"]) == KLINE_KEYS
        assert (data["k"]["t"], data["k"]["T"], data["k"]["x"]) == (
            k.open_ms,
            k.open_ms + 59_999,
            True,
        )
        assert k.rest_row() == [
            k.open_ms, data["k"]["o"], data["k"]["h"], data["k"]["l"], data["k"]["c"],
            data["k"]["v"], k.open_ms + 59_999, data["k"]["q"], data["k"]["n"], data["k"]["V"],
            data["k"]["Q"], "0",
        ]  # fmt: skip
    # the open kline holds the trades of the current minute so far
    assert builder.current.values() == expected[last + 60_000]
    assert KlineEvent(builder.current, 1, False).payload.count('"x":false') == 1
    assert spec.tick_units == 10**6


def test_a_minute_without_trades_carries_the_previous_close(tmp_path):
    trades, _ = generate(tmp_path, "ETHUSDT", 2, 4000, rate=30.0)
    minute = lambda t: t.time - t.time % 60_000  # noqa: E731
    minutes = sorted({minute(t) for t in trades})
    quiet = minutes[1]
    kept = [t for t in trades if minute(t) != quiet]  # a minute where nothing traded
    before = [t for t in kept if minute(t) < quiet]
    klines = klines_between("ETHUSDT", kept, minutes[0], minutes[2], 1)
    empty = next(k for k in klines if k.open_ms == quiet)
    close = format_units(before[-1].price)
    assert empty.values() == {
        "o": close, "h": close, "l": close, "c": close, "v": "0.00000000", "q": "0.00000000",
        "n": 0, "V": "0.00000000", "Q": "0.00000000", "f": -1, "L": -1,
    }  # fmt: skip
    assert klines[-1].values()["o"] == format_units(
        next(t for t in kept if minute(t) == minutes[2]).price
    )


def test_book_tickers_bracket_each_aggregate_trade_with_consecutive_update_ids(tmp_path):
    _, aggs = generate(tmp_path, "BNBUSDT", 3, 1000)
    maker = BookMaker(spec_for("BNBUSDT"), IdStore(tmp_path).sequence("BNBUSDT", "book"))
    tickers = maker.after(aggs[:600]) + maker.after(aggs[600:])
    assert len(tickers) == len(aggs)
    assert [b.update_id for b in tickers] == list(range(FIRST_ID, FIRST_ID + len(aggs)))
    for agg, book in zip(aggs, tickers, strict=True):
        assert book.bid < agg.price < book.ask
        assert book.bid_qty > 0 and book.ask_qty > 0
        assert book.bid_qty % spec_for("BNBUSDT").step_units == 0
    data = json.loads(tickers[0].payload)
    assert list(data) == ["u", "s", "b", "B", "a", "A"]
    assert data["s"] == "BNBUSDT" and all(isinstance(data[k], str) for k in "bBaA")
    assert len({b.bid_qty for b in tickers}) > 10  # quantities vary
    maker.release_ids()
    assert IdStore(tmp_path).sequence("BNBUSDT", "book").take() == FIRST_ID + len(aggs)


def test_microsecond_payloads_rest_and_paths_agree_with_milliseconds(tmp_path):
    trades, aggs = generate(tmp_path, "BTCUSDT", 1, 500)
    assert any(t.time_us % 1000 for t in trades)  # sub-millisecond precision is kept
    for t in trades[:50]:
        ms, us = json.loads(t.payload), json.loads(t.payload_us)
        assert us["T"] // 1000 == ms["T"] and us["E"] // 1000 == ms["E"] and us["T"] > MICROS
        assert {k: v for k, v in us.items() if k not in "ET"} == {
            k: v for k, v in ms.items() if k not in "ET"
        }
    a_ms, a_us = json.loads(aggs[0].payload), json.loads(aggs[0].payload_us)
    assert (a_us["T"] // 1000, a_us["E"] // 1000) == (a_ms["T"], a_ms["E"])
    (frame,) = frames.encode_frames([("btcusdt@trade", trades[0].payload, trades[0])], True, True)
    assert frame[1] == 126  # a 16-bit length follows
    assert json.loads(frame[4:])["data"] == json.loads(trades[0].payload_us)
    assert control.micros_from_path("/stream?streams=a@trade&timeUnit=MICROSECOND") is True
    assert control.micros_from_path("/ws/a@trade?timeUnit=microsecond") is True
    assert control.micros_from_path("/stream?streams=a@trade") is False
    assert control.micros_from_path("/stream?streams=a@trade&timeUnit=NANO") is None
    api = rest_api(tmp_path / "rest")
    path = f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={FIRST_ID}&limit=5"
    ms_rows = body(api.handle(path, "ip"))
    us_rows = body(api.handle(path, "ip", {"X-MBX-TIME-UNIT": "MICROSECOND"}))
    assert body(api.handle(path + "&timeUnit=MICROSECOND", "ip")) == us_rows
    assert [r["time"] // 1000 for r in us_rows] == [r["time"] for r in ms_rows]
    bad = api.handle(path, "ip", {"x-mbx-time-unit": "SECOND"})
    assert (bad.status, body(bad)["code"]) == (400, -1100)
    t_us = us_rows[2]["time"]  # time parameters in µs select by the µs time
    by_us = body(api.handle(f"/api/v3/aggTrades?symbol=BTCUSDT&startTime={t_us}&limit=3", "ip"))
    assert by_us and by_us[0]["T"] >= t_us // 1000


def rest_with_market(tmp_path: Path, n: int = 6000) -> tuple[RestApi, list, int]:
    trades, aggs = generate(tmp_path, "BTCUSDT", 5, n, rate=40.0)
    th, ah = History(100_000), History(100_000)
    th.extend(trades)
    ah.extend(aggs)
    start, horizon = trades[0].time - 5, trades[-1].time + 1
    api = RestApi(
        [spec_for("BTCUSDT")], {"BTCUSDT": th}, {"BTCUSDT": ah}, 6000,
        clock=FakeClock(horizon / 1000), market=lambda s: (start, horizon),
    )  # fmt: skip
    return api, trades, horizon


def test_rest_klines_are_the_closed_minutes_of_the_trades(tmp_path):
    api, trades, horizon = rest_with_market(tmp_path)
    expected = expected_klines(trades)
    r = api.handle("/api/v3/klines?symbol=BTCUSDT&interval=1m", "ip")
    rows = body(r)
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "2"
    closed = sorted(m for m in expected if m + 60_000 <= horizon - horizon % 60_000)
    assert [row[0] for row in rows] == closed  # the open minute is not served
    for row in rows:
        e = expected[row[0]]
        assert row == [row[0], e["o"], e["h"], e["l"], e["c"], e["v"], row[0] + 59_999, e["q"],
                       e["n"], e["V"], e["Q"], "0"]  # fmt: skip
    second = closed[1]
    window = body(api.handle(
        f"/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={second - 1}&limit=1", "ip"
    ))  # fmt: skip
    assert [row[0] for row in window] == [second]
    ended = body(api.handle(f"/api/v3/klines?symbol=BTCUSDT&interval=1m&endTime={second}", "ip"))
    assert [row[0] for row in ended] == closed[:2]
    us = body(api.handle(
        f"/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={second * 1000}&limit=1", "ip",
        {"X-MBX-TIME-UNIT": "MICROSECOND"},
    ))  # fmt: skip
    assert us[0][0] == second * 1000 and us[0][6] == (second + 60_000) * 1000 - 1
    assert us[0][1:6] == window[0][1:6]
    for path, code in (
        ("interval=5m", -1120),
        ("interval=", -1102),
        ("interval=1m&limit=0", -1130),
    ):
        bad = api.handle(f"/api/v3/klines?symbol=BTCUSDT&{path}", "ip")
        assert (bad.status, body(bad)["code"]) == (400, code)


def outbox_run(tmp_path: Path, listening: set[str], **options):
    """Feed a SymbolFeed's trades through an Outbox in batches (as the server does); returns
    (events, outbox, trades, aggs)."""
    settings = make_settings(make_data_dir())
    opts = SimulatorOptions(symbols=("BTCUSDT",), **options).resolve(settings)
    trades, aggs = generate(tmp_path, "BTCUSDT", 5, 6000, rate=40.0)
    history = History(100_000)
    recorder = Recorder(opts.record) if opts.record else None
    outbox = Outbox(opts, [spec_for("BTCUSDT")], IdStore(tmp_path / "ids"), {"BTCUSDT": history},
                    recorder)  # fmt: skip
    events, a = [], 0
    for i in range(0, len(trades), 250):
        batch = trades[i : i + 250]
        history.extend(batch)
        batch_aggs = []
        while a < len(aggs) and aggs[a].last_id <= batch[-1].id:
            batch_aggs.append(aggs[a])
            a += 1
        now = (batch[-1].time + 1) * 1000
        horizon = lambda s, b=batch: b[-1].time + 1  # noqa: E731
        events += outbox.batch(batch, {"BTCUSDT": batch_aggs}, {"BTCUSDT": batch}, listening,
                               horizon, now)  # fmt: skip
        events += outbox.tick(horizon, now)
    end = trades[-1].time + 60_000
    events += outbox.tick(lambda s: end, end * 1000)
    return events, outbox, trades, aggs


def test_kline_fault_alters_exactly_one_field_of_every_nth_closed_kline(tmp_path):
    record = tmp_path / "rec.jsonl"
    events, outbox, trades, _ = outbox_run(tmp_path, set(), record=record, kline_fault_every=2)
    closed = [json.loads(p) for s, p, _ in events if s == "btcusdt@kline_1m" and '"x":true' in p]
    updates = [json.loads(p) for s, p, _ in events if s == "btcusdt@kline_1m" and '"x":false' in p]
    true = read_record(record, "kline_1m")
    faults = read_record(record, "kline_faults")
    assert len(closed) == len(true) >= 3 and updates  # open updates every 2 s as well
    expected = expected_klines(trades)
    for n, (sent, real) in enumerate(zip(closed, true, strict=True), start=1):
        k, r = sent["k"], real["k"]
        assert r["t"] == k["t"] and r["x"] is True
        if r["n"]:  # the true values are the trades' (the first minute may be partial)
            want = expected[r["t"]]
            assert r["n"] <= want["n"] and r["L"] == want["L"]
            if r["f"] == want["f"]:
                assert {key: r[key] for key in want} == want
        differing = [key for key in r if r[key] != k[key]]
        if n % 2:
            assert differing == []
        else:
            (key,) = differing
            assert {"s": "BTCUSDT", "t": r["t"], "field": key, "true": r[key], "sent": k[key]} in (
                faults
            )
    assert [f["field"] for f in faults] == ["o", "h", "l", "c", "v", "q", "n", "V", "Q", "f", "L"][
        : len(faults)
    ]
    assert outbox.stats()["kline_1m"]["generated"] == len(true)


def test_faults_apply_to_every_stream_kind(tmp_path):
    listening = {"btcusdt@trade", "btcusdt@aggTrade", "btcusdt@bookTicker", "btcusdt@kline_1m"}
    events, outbox, _, aggs = outbox_run(
        tmp_path, listening, skip_ids=2, skip_every=20, malformed_every=25
    )
    by_stream: dict[str, list[str]] = {}
    for stream, payload, _ in events:
        by_stream.setdefault(stream, []).append(payload)
    stats = outbox.stats()
    for stream, id_key in (("btcusdt@aggTrade", "a"), ("btcusdt@bookTicker", "u")):
        kind = stream.split("@")[1]
        good, bad = [], 0
        for payload in by_stream[stream]:
            try:
                data = json.loads(payload)
            except json.JSONDecodeError:
                bad += 1
                continue
            if id_key in data:
                good.append(data[id_key])
            else:
                bad += 1
        gaps = [b - a - 1 for a, b in itertools.pairwise(good) if b != a + 1]
        assert gaps and set(gaps) == {2}, kind  # runs of 2 ids held back
        held = [
            i for _, first, last in stats[kind]["skipped_ranges"] for i in range(first, last + 1)
        ]
        assert len(held) == stats[kind]["skipped"] and not set(held) & set(good)
        assert sorted(good + held) == list(range(good[0], good[0] + len(good) + len(held)))
        assert bad == stats[kind]["malformed"] > 0
    assert stats["aggTrade"]["generated"] == len(aggs)
    assert stats["bookTicker"]["generated"] == len(aggs)
