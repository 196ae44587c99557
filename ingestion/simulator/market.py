"""Believable trades as pure functions of a seed: price paths, bursty arrivals, heavy-tailed sizes.

Prices and quantities are integers in units of 1e-8 (Binance's 8 decimals), so nothing here is
a binary float once it leaves the model: ``format_units`` turns them into Binance's strings.
Each symbol has its own numpy generator seeded from ``(seed, symbol)``, so a symbol's path
does not depend on which other symbols run, and the same seed gives the same prices, sizes and
timing (offsets from the start) on every run (with the same numpy, which the lock file pins).
Orders are drawn in vectorised blocks, so the hot path only formats strings. Trade ids are
not chosen here (see ``ids.py``).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

import numpy as np

UNIT = 10**8  # 1e-8: Binance prices and quantities carry 8 decimals

QUOTE_ASSETS = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")


@dataclass(frozen=True)
class SymbolSpec:
    """How one symbol trades: level, tick and lot size, typical size and share of the rate."""

    symbol: str
    base_price: Decimal
    tick_size: Decimal
    step_size: Decimal
    median_qty: Decimal
    weight: float  # share of the total trade rate before normalisation

    @property
    def tick_units(self) -> int:
        return int(self.tick_size * UNIT)

    @property
    def step_units(self) -> int:
        return int(self.step_size * UNIT)

    @property
    def base_asset(self) -> str:
        return self.symbol[: -len(self.quote_asset)] or self.symbol

    @property
    def quote_asset(self) -> str:
        for quote in QUOTE_ASSETS:
            if self.symbol.endswith(quote) and len(self.symbol) > len(quote):
                return quote
        return self.symbol[-4:]


KNOWN_SPECS = {
    "BTCUSDT": SymbolSpec(
        "BTCUSDT", Decimal("90000"), Decimal("0.01"), Decimal("0.00001"), Decimal("0.002"), 0.45
    ),
    "ETHUSDT": SymbolSpec(
        "ETHUSDT", Decimal("3000"), Decimal("0.01"), Decimal("0.0001"), Decimal("0.03"), 0.35
    ),
    "BNBUSDT": SymbolSpec(
        "BNBUSDT", Decimal("860"), Decimal("0.01"), Decimal("0.001"), Decimal("0.05"), 0.20
    ),
}


def spec_for(symbol: str) -> SymbolSpec:
    """The spec of a known symbol, or a stable made-up one (price 1..100) for any other."""
    if symbol in KNOWN_SPECS:
        return KNOWN_SPECS[symbol]
    h = zlib.crc32(symbol.encode())
    price = Decimal(100 + h % 9900) / 100  # 1.00 .. 99.99, stable per symbol
    return SymbolSpec(symbol, price, Decimal("0.0001"), Decimal("0.01"), Decimal("10"), 0.15)


def format_units(units: int) -> str:
    """``9000001000000`` -> ``"90000.01000000"`` (Binance's 8-decimal strings)."""
    whole, frac = divmod(units, UNIT)
    return f"{whole}.{frac:08d}"


class OrderBlock(NamedTuple):
    """A block of consecutive taker orders, as plain lists (cheap to walk in Python).

    Order ``i`` hit at ``offset_ms[i]`` (ms after the start), the taker sold when
    ``is_buyer_maker[i]``, events were stamped ``event_delay_ms[i]`` after the trade, and it
    made the trades ``fill_start[i] : fill_start[i + 1]`` of ``price`` / ``qty`` (1e-8 units).
    """

    offset_ms: list[float]
    is_buyer_maker: list[bool]
    event_delay_ms: list[int]
    fill_start: list[int]  # len(orders) + 1 entries
    price: list[int]
    qty: list[int]


# Arrival regimes: a two-state Markov chain makes trading bursty (calm most of the time,
# short bursts at several times the mean rate); the base rate is scaled so the long-run
# trade rate is the one asked for.
RATE_MULTIPLIER = (0.6, 3.0)  # calm, burst
SWITCH_PROBABILITY = (0.01, 0.05)  # per order: calm -> burst, burst -> calm
_P_BURST = SWITCH_PROBABILITY[0] / (SWITCH_PROBABILITY[0] + SWITCH_PROBABILITY[1])
_MEAN_GAP = (1 - _P_BURST) / RATE_MULTIPLIER[0] + _P_BURST / RATE_MULTIPLIER[1]
MAX_FILLS = 25  # makers one taker order can hit
FILL_PARETO_ALPHA = 1.9  # fills per order = min(floor(1 + Lomax), MAX_FILLS)
MEAN_FILLS = 1.69
WALK_PROBABILITY = 0.3  # chance that the next fill of an order is one tick deeper
QTY_SIGMA = 1.1  # lognormal body of quantities around the median
QTY_TAIL_PROBABILITY, QTY_TAIL_ALPHA = 0.03, 1.3  # rare whales: Pareto multiplier
VOLATILITY_PER_SQRT_S = 1.5e-4  # relative mid-price volatility
BLOCK_ORDERS = 1024


@dataclass
class SymbolMarket:
    """The random state of one symbol; ``next_block()`` draws the next orders with numpy,
    seeded from ``(seed, symbol)``."""

    spec: SymbolSpec
    trades_per_s: float
    seed: int
    rng: np.random.Generator = field(init=False)
    mid_ticks: float = field(init=False)
    offset_ms: float = field(init=False, default=0.0)
    regime: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.trades_per_s <= 0:
            raise ValueError(f"trade rate of {self.spec.symbol} must be positive")
        symbol_key = zlib.crc32(self.spec.symbol.encode())
        self.rng = np.random.default_rng(np.random.SeedSequence([self.seed, symbol_key]))
        self.mid_ticks = float(self.spec.base_price / self.spec.tick_size)
        self._orders_per_ms = self.trades_per_s / MEAN_FILLS / 1000.0 * _MEAN_GAP
        self._median_steps = max(1.0, float(self.spec.median_qty / self.spec.step_size))
        self._sigma = self.mid_ticks * VOLATILITY_PER_SQRT_S / math.sqrt(1000.0)  # per sqrt(ms)

    def next_block(self, n: int = BLOCK_ORDERS) -> OrderBlock:
        rng = self.rng
        multiplier = np.empty(n)
        regime = self.regime
        for i, u in enumerate(rng.random(n).tolist()):
            if u < SWITCH_PROBABILITY[regime]:
                regime = 1 - regime
            multiplier[i] = RATE_MULTIPLIER[regime]
        self.regime = regime
        gaps = rng.exponential(1.0, n) / (self._orders_per_ms * multiplier)
        offsets = self.offset_ms + np.cumsum(gaps)
        self.offset_ms = float(offsets[-1])
        sells = rng.random(n) < 0.5
        counts = np.minimum(np.floor(rng.pareto(FILL_PARETO_ALPHA, n) + 1), MAX_FILLS)
        counts = counts.astype(np.int64)
        starts = np.concatenate(([0], np.cumsum(counts)))
        n_fills = int(starts[-1])
        order_of_fill = np.repeat(np.arange(n), counts)
        steps = rng.random(n_fills) < WALK_PROBABILITY
        steps[starts[:-1]] = False  # the first fill takes the best price
        walked: np.ndarray = np.cumsum(steps)  # numpy's stubs leave the dtype unsolved
        level = walked - walked[starts[:-1]][order_of_fill]  # ticks deeper within the order
        depth = level[starts[1:] - 1]  # how far each order walked the book
        # the mid follows a random walk and is pushed by orders that walked the book
        impact = np.where(sells, -depth / 2, depth / 2)
        shocks = rng.normal(0.0, 1.0, n) * self._sigma * np.sqrt(gaps)
        mids = self.mid_ticks + np.cumsum(shocks) + np.cumsum(impact) - impact
        mids = np.maximum(mids, 10.0)  # never walk to zero
        self.mid_ticks = float(mids[-1] + impact[-1])
        best = np.where(sells, np.floor(mids), np.ceil(mids + 0.5)).astype(np.int64)
        sign = np.where(sells, -1, 1)
        price_ticks = np.maximum(best[order_of_fill] + sign[order_of_fill] * level, 1)
        qty_steps = self._median_steps * rng.lognormal(0.0, QTY_SIGMA, n_fills)
        whales = rng.random(n_fills) < QTY_TAIL_PROBABILITY
        qty_steps[whales] *= rng.pareto(QTY_TAIL_ALPHA, int(whales.sum())) + 1
        qty_steps = np.clip(np.floor(qty_steps), 1, self._median_steps * 50_000)
        return OrderBlock(
            offsets.tolist(),
            sells.tolist(),
            rng.integers(0, 4, n).tolist(),
            starts.tolist(),
            (price_ticks * self.spec.tick_units).tolist(),
            (qty_steps.astype(np.int64) * self.spec.step_units).tolist(),
        )


def split_rate(specs: list[SymbolSpec], total_per_s: float) -> dict[str, float]:
    """Share ``total_per_s`` among symbols in proportion to their weights."""
    total_weight = sum(s.weight for s in specs)
    return {s.symbol: total_per_s * s.weight / total_weight for s in specs}
