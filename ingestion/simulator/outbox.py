"""What each batch of trades streams, for every stream kind, with each kind's faults; and the
record of what was generated.

Trades are always streamed. The other kinds cost only where they are wanted: a symbol's
aggregate trades are serialised, its klines updated and its book tickers made when some
connection listens to that stream (or, with ``--record`` / ``--kline-fault-every``, for every
symbol, so the record and the faults do not depend on who listens). A kline builder that
starts mid-minute first folds in that minute's retained trades, so every closed kline is
complete (``_start_klines``).
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Callable, Iterable

from ingestion.simulator.book import BookMaker
from ingestion.simulator.faults import IdSkipper, KlineFaulter, MalformedInjector
from ingestion.simulator.frames import AggTrade, Event, Trade, malformed_payload
from ingestion.simulator.history import History
from ingestion.simulator.ids import IdStore
from ingestion.simulator.klines import (
    MINUTE_MS,
    Kline,
    KlineBuilder,
    KlineEvent,
    previous_close,
)
from ingestion.simulator.market import SymbolSpec
from ingestion.simulator.options import ResolvedOptions
from ingestion.simulator.record import Recorder

KINDS = ("trade", "aggTrade", "kline_1m", "bookTicker")
KLINE_UPDATE_US = 2_000_000  # an open kline is streamed every 2 s, like Binance's 1m klines


class Outbox:
    """Turns batches into ``frames.Event`` lists (``batch``, ``tick``) and writes the record."""

    def __init__(
        self,
        options: ResolvedOptions,
        specs: list[SymbolSpec],
        ids: IdStore,
        history: dict[str, History[Trade]],
        recorder: Recorder | None,
    ) -> None:
        self.specs = {s.symbol: s for s in specs}
        self.ids = ids
        self.history = history
        self.recorder = recorder
        self.everywhere = recorder is not None or options.kline_fault_every > 0
        self.stream = {k: {s: f"{s.lower()}@{k}" for s in self.specs} for k in KINDS}
        self.skippers = {k: IdSkipper(options.skip_ids, options.skip_every) for k in KINDS}
        self.malformed = {k: MalformedInjector(options.malformed_every) for k in KINDS}
        self.faulty = options.skip_ids > 0 or options.malformed_every > 0
        self.kline_faults = KlineFaulter(options.kline_fault_every)
        self.klines: dict[str, KlineBuilder] = {}
        self._kline_sent_us: dict[str, int] = {}
        self.books: dict[str, BookMaker] = {}
        self.generated: collections.Counter[str] = collections.Counter()
        self.streamed: collections.Counter[str] = collections.Counter()
        self.fault_log: collections.deque[dict] = collections.deque(maxlen=1000)

    @property
    def busy_without_listeners(self) -> bool:
        """Whether batches must be processed with nobody listening (faults, record)."""
        return self.faulty or self.everywhere

    def wanted(self, kind: str, listening: set[str]) -> list[str]:
        """Symbols whose ``kind`` stream is produced now."""
        streams = self.stream[kind]
        return [s for s in self.specs if self.everywhere or streams[s] in listening]

    # ----- a batch of trades
    def batch(
        self,
        trades: list[Trade],
        aggs: dict[str, list[AggTrade]],
        by_symbol: dict[str, list[Trade]],
        listening: set[str],
        horizon: Callable[[str], int],
        now_us: int,
    ) -> list[Event]:
        """Events of a batch (already in ``history``): trades, then the other kinds."""
        if self.recorder:
            self.recorder.write(trades)
        self.generated["trade"] += len(trades)
        events = self._trades(trades)
        for symbol in self.wanted("aggTrade", listening):
            rows = aggs.get(symbol, [])
            payloads = [a.payload for a in rows]
            self.generated["aggTrade"] += len(rows)
            if self.recorder:
                self.recorder.write_lines("aggTrade", payloads)
            out = ((a.id, p, a) for a, p in zip(rows, payloads, strict=True))
            self._add("aggTrade", symbol, out, now_us, events)
        kline_symbols = self.wanted("kline_1m", listening)
        for symbol in kline_symbols:
            builder = self.klines.get(symbol)
            if builder is None:
                self._start_klines(symbol, horizon(symbol), now_us)
            elif symbol in by_symbol:
                self._closed(builder.add(by_symbol[symbol]), now_us, events)
        for symbol in set(self.klines) - set(kline_symbols):
            del self.klines[symbol]  # nobody listens: restarted (with a backfill) when needed
        for symbol in self.wanted("bookTicker", listening):
            maker = self.books.get(symbol)
            if maker is None:
                maker = self.books[symbol] = BookMaker(
                    self.specs[symbol], self.ids.sequence(symbol, "book")
                )
            tickers = maker.after(aggs.get(symbol, []))
            payloads = [b.payload for b in tickers]
            self.generated["bookTicker"] += len(tickers)
            if self.recorder:
                self.recorder.write_lines("bookTicker", payloads)
            updates = ((b.update_id, p, None) for b, p in zip(tickers, payloads, strict=True))
            self._add("bookTicker", symbol, updates, now_us, events)
        return events

    def _trades(self, trades: list[Trade]) -> list[Event]:
        streams = self.stream["trade"]
        if not self.faulty:
            self.streamed["trade"] += len(trades)
            return [(streams[t.symbol], t.payload, t) for t in trades]
        events: list[Event] = []
        streamed = 0
        skip, after = self.skippers["trade"].skip, self.malformed["trade"].after_trade
        for t in trades:
            if skip(t.symbol, t.id):
                continue
            stream = streams[t.symbol]
            events.append((stream, t.payload, t))
            streamed += 1
            kind = after()
            if kind:
                events.append((stream, malformed_payload(kind, t.symbol, t.event_time), None))
        self.streamed["trade"] += streamed
        return events

    def _add(
        self,
        kind: str,
        symbol: str,
        records: Iterable[tuple[int, str, object]],
        now_us: int,
        events: list[Event],
        skippable: bool = True,
    ) -> None:
        """Append ``(id, payload, source)`` records of ``kind`` with that kind's faults."""
        stream = self.stream[kind][symbol]
        if not self.faulty:
            before = len(events)
            events.extend((stream, p, src) for _, p, src in records)
            self.streamed[kind] += len(events) - before
            return
        skip, after = self.skippers[kind].skip, self.malformed[kind].after_trade
        for record_id, payload, source in records:
            if skippable and skip(symbol, record_id):
                continue
            events.append((stream, payload, source))
            self.streamed[kind] += 1
            bad = after()
            if bad:
                noise = malformed_payload(bad, symbol, now_us // 1000, kind)
                events.append((stream, noise, None))

    # ----- klines
    def _start_klines(self, symbol: str, horizon_ms: int, now_us: int) -> None:
        """A builder from the current minute (of the market clock), with that minute's trades
        so far; from the next minute when older trades of this one are no longer retained."""
        history = self.history[symbol]
        open_ms = horizon_ms - horizon_ms % MINUTE_MS
        oldest, lost = history.served()
        start = history.index_at(open_ms)
        if lost and start <= oldest:
            open_ms += MINUTE_MS
            start = len(history.rows)
        close = previous_close(history, open_ms, self.specs[symbol])
        builder = KlineBuilder(symbol, open_ms, close)
        builder.add(history.rows[start:])
        self.klines[symbol] = builder
        self._kline_sent_us[symbol] = now_us

    def tick(self, horizon: Callable[[str], int], now_us: int) -> list[Event]:
        """Klines due now: minutes the market clock has passed, and an open kline update of
        each symbol every ``KLINE_UPDATE_US``."""
        events: list[Event] = []
        for symbol, builder in self.klines.items():
            self._closed(builder.close_until(horizon(symbol)), now_us, events)
            if now_us - self._kline_sent_us[symbol] >= KLINE_UPDATE_US:
                self._kline_sent_us[symbol] = now_us
                snapshot = KlineEvent(dataclasses.replace(builder.current), now_us, False)
                self._add("kline_1m", symbol, [(0, snapshot.payload, snapshot)], now_us, events,
                          skippable=False)  # fmt: skip
        return events

    def _closed(self, klines: list[Kline], now_us: int, events: list[Event]) -> None:
        """Stream closed klines (minus skipped ones, the Nth one altered) and record them."""
        if not klines:
            return
        self.generated["kline_1m"] += len(klines)
        records, faults = [], []
        sent: list[tuple[int, str, object]] = []
        skipper = self.skippers["kline_1m"]
        for k in klines:
            true = KlineEvent(k, now_us, True)
            records.append(true.payload)
            if self.faulty and skipper.skip(k.symbol, k.open_ms):
                continue
            out = true
            key = self.kline_faults.next_field()
            if key is not None:
                out = KlineEvent(k.altered(key, self.specs[k.symbol]), now_us, True)
                fault = {"s": k.symbol, "t": k.open_ms, "field": key,
                         "true": k.values()[key], "sent": out.kline.values()[key]}  # fmt: skip
                faults.append(json.dumps(fault, separators=(",", ":")))
                self.fault_log.append(fault)
            sent.append((k.open_ms, out.payload, out))
        self._kline_sent_us[klines[0].symbol] = now_us
        self._add("kline_1m", klines[0].symbol, sent, now_us, events, skippable=False)
        if self.recorder:
            self.recorder.write_lines("kline_1m", records)
            self.recorder.write_lines("kline_faults", faults)

    # ----- status
    def stats(self) -> dict[str, dict]:
        """Per stream kind: generated, streamed, held back (and their id ranges), malformed."""
        return {
            kind: {
                "generated": self.generated[kind],
                "streamed": self.streamed[kind],
                "skipped": self.skippers[kind].skipped,
                "skipped_ranges": [list(r) for r in self.skippers[kind].ranges],
                "malformed": self.malformed[kind].sent,
            }
            for kind in KINDS
        }

    def release_ids(self) -> None:
        for maker in self.books.values():
            maker.release_ids()
