"""Believable trades as pure functions of a seed: price paths, bursty arrivals, heavy-tailed sizes.

Prices and quantities are integers in units of 1e-8 (Binance's 8 decimals), so nothing here is
a binary float once it leaves the model: ``format_units`` turns them into Binance's strings.
Each symbol has its own ``random.Random`` seeded from ``(seed, symbol)``, so a symbol's path does
not depend on which other symbols run, and the same seed gives the same prices, sizes and
timing (offsets from the start) on every run. Trade ids are not chosen here (see ``ids.py``).
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

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


class Fill(NamedTuple):
    """One trade of a taker order against one maker: price and quantity in 1e-8 units."""

    price: int
    qty: int


class Order(NamedTuple):
    """A taker order: when it hit (ms after start), which side, and the trades it made."""

    offset_ms: float
    is_buyer_maker: bool  # True: the taker sold into bids
    event_delay_ms: int  # E - T
    fills: tuple[Fill, ...]


# Arrival regimes: a two-state Markov chain makes trading bursty (calm most of the time,
# short bursts at several times the mean rate); the weights keep the long-run mean rate.
CALM, BURST = 0, 1
RATE_MULTIPLIER = (0.6, 3.0)
SWITCH_PROBABILITY = (0.01, 0.05)  # per order: calm -> burst, burst -> calm
_P_BURST = SWITCH_PROBABILITY[0] / (SWITCH_PROBABILITY[0] + SWITCH_PROBABILITY[1])
# mean time between orders, in units of 1/base rate: scales the base rate so the long-run
# trade rate is the one asked for
_MEAN_GAP = (1 - _P_BURST) / RATE_MULTIPLIER[CALM] + _P_BURST / RATE_MULTIPLIER[BURST]
MEAN_FILLS = 1.69  # average trades per taker order (see _fill_count)
VOLATILITY_PER_SQRT_S = 1.5e-4  # relative mid-price volatility


@dataclass
class SymbolMarket:
    """The random state of one symbol. ``next_order`` advances it by one taker order."""

    spec: SymbolSpec
    trades_per_s: float
    seed: int | str | None
    rng: random.Random = field(init=False)
    mid_ticks: float = field(init=False)
    offset_ms: float = field(init=False, default=0.0)
    regime: int = field(init=False, default=CALM)

    def __post_init__(self) -> None:
        if self.trades_per_s <= 0:
            raise ValueError(f"trade rate of {self.spec.symbol} must be positive")
        self.rng = random.Random(f"{self.seed}:{self.spec.symbol}")
        self.mid_ticks = float(self.spec.base_price / self.spec.tick_size)
        self._orders_per_ms = self.trades_per_s / MEAN_FILLS / 1000.0 * _MEAN_GAP
        self._median_steps = max(1.0, float(self.spec.median_qty / self.spec.step_size))
        # volatility in ticks per sqrt(ms)
        self._sigma = self.mid_ticks * VOLATILITY_PER_SQRT_S / math.sqrt(1000.0)

    def next_order(self) -> Order:
        rng = self.rng
        if rng.random() < SWITCH_PROBABILITY[self.regime]:
            self.regime = 1 - self.regime
        gap = rng.expovariate(self._orders_per_ms * RATE_MULTIPLIER[self.regime])
        self.offset_ms += gap
        self.mid_ticks += rng.gauss(0.0, self._sigma * math.sqrt(gap))
        self.mid_ticks = max(self.mid_ticks, 10.0)  # never walk to zero
        taker_sells = rng.random() < 0.5
        best = math.floor(self.mid_ticks) if taker_sells else math.ceil(self.mid_ticks + 0.5)
        tick = self.spec.tick_units
        step = self.spec.step_units
        fills = []
        level = 0
        for i in range(_fill_count(rng)):
            if i and rng.random() < 0.3:  # walking the book one tick deeper
                level += 1
            price_ticks = best - level if taker_sells else best + level
            fills.append(Fill(max(price_ticks, 1) * tick, self._quantity_steps(rng) * step))
        if level:  # the order moved the market
            self.mid_ticks += -level / 2 if taker_sells else level / 2
        return Order(self.offset_ms, taker_sells, rng.randint(0, 3), tuple(fills))

    def _quantity_steps(self, rng: random.Random) -> int:
        """Lognormal body with an occasional Pareto tail: many small trades, rare whales."""
        steps = self._median_steps * rng.lognormvariate(0.0, 1.1)
        if rng.random() < 0.03:
            steps *= rng.paretovariate(1.3)
        return max(1, min(int(steps), int(self._median_steps * 50_000)))


def _fill_count(rng: random.Random) -> int:
    """Makers hit by one taker order: 1 most of the time, heavy-tailed, at most 25."""
    return min(int(rng.paretovariate(1.9)), 25)


def split_rate(specs: list[SymbolSpec], total_per_s: float) -> dict[str, float]:
    """Share ``total_per_s`` among symbols in proportion to their weights."""
    total_weight = sum(s.weight for s in specs)
    return {s.symbol: total_per_s * s.weight / total_weight for s in specs}
