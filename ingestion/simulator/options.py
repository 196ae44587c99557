"""What a simulator run does: rate, seed, limits and fault injection, checked up front."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import ConfigError


@dataclass(frozen=True)
class SimulatorOptions:
    """Options of one simulator run; ``None`` host/port/symbols come from the settings.

    Periodic faults (``*_every`` in seconds) are off when ``None``; counters are off at 0.
    """

    host: str | None = None  # default settings.sim_host
    port: int | None = None  # default settings.sim_port; 0 picks a free port
    symbols: tuple[str, ...] | None = None  # default settings.symbols
    seed: int | None = None  # None: a random seed (logged)
    rate: float = 30.0  # trades per second over all symbols (live-like for the default three)
    max_trades: int | None = None  # stop generating after this many trades PER SYMBOL
    record: Path | None = None  # JSON lines of every generated trade (appended)
    retention: int = 200_000  # trades (and aggTrades) per symbol kept for REST
    wait_for_client: bool = False  # start the market when the first WebSocket client connects
    # --- protocol limits (Binance's values by default)
    ping_interval: float = 20.0  # seconds between server pings
    pong_timeout: float = 60.0  # disconnect when a ping is not answered within this
    max_lifetime: float = 24 * 3600.0  # seconds a connection may live
    message_limit: int = 5  # incoming messages per second before a disconnect
    weight_limit: int = 6000  # REST request weight per minute per IP; 429 beyond
    # --- fault injection
    drop_every: float | None = None  # abort every client connection this often (seconds)
    skip_ids: int = 0  # records per gap (of each stream kind) generated but not streamed
    skip_every: int = 1000  # streamed records of a symbol and kind between two gaps
    malformed_every: int = 0  # a malformed frame after every N streamed records of each kind
    kline_fault_every: int = 0  # alter one field of every Nth closed kline streamed
    pong_delay: float = 0.0  # seconds the server waits before handling client frames (pings)
    shutdown_every: float | None = None  # send serverShutdown this often (seconds)
    shutdown_grace: float = 1.0  # seconds between serverShutdown and closing the connection

    def resolve(self, settings: Settings) -> ResolvedOptions:
        """Fill host, port and symbols from ``settings`` and validate everything."""
        resolved = ResolvedOptions(
            **{
                **{f.name: getattr(self, f.name) for f in fields(self)},
                "host": self.host or settings.sim_host,
                "port": settings.sim_port if self.port is None else self.port,
                "symbols": tuple(s.upper() for s in (self.symbols or settings.symbols)),
            }
        )
        resolved.validate()
        return resolved

    def validate(self) -> None:
        if not self.symbols:
            raise ConfigError("simulator: name at least one symbol, e.g. --symbols BTCUSDT")
        for sym in self.symbols:
            if not sym.isalnum():
                raise ConfigError(f"simulator: {sym!r} is not a Binance symbol like BTCUSDT")
        if not 0 < self.rate <= 1_000_000:
            raise ConfigError(f"simulator: --rate {self.rate} must be in (0, 1000000] trades/s")
        positive = {
            "max_trades": self.max_trades,
            "retention": self.retention,
            "ping_interval": self.ping_interval,
            "pong_timeout": self.pong_timeout,
            "max_lifetime": self.max_lifetime,
            "message_limit": self.message_limit,
            "weight_limit": self.weight_limit,
            "drop_every": self.drop_every,
            "skip_every": self.skip_every,
            "shutdown_every": self.shutdown_every,
        }
        for name, value in positive.items():
            if value is not None and value <= 0:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"simulator: {flag} must be positive, got {value}")
        for name in (
            "skip_ids", "malformed_every", "kline_fault_every", "pong_delay", "shutdown_grace"
        ):  # fmt: skip
            if getattr(self, name) < 0:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"simulator: {flag} must not be negative")
        if self.port is not None and not 0 <= self.port < 65536:
            raise ConfigError(f"simulator: --port {self.port} is not a TCP port")

    def to_cli_args(self) -> list[str]:
        """The ``cryptoflow simulate`` flags that reproduce these options."""
        args: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == f.default:
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                args.append(flag)  # a store_true switch (defaults are False)
                continue
            args += [flag, ",".join(value) if isinstance(value, tuple) else str(value)]
        return args


@dataclass(frozen=True)
class ResolvedOptions(SimulatorOptions):
    """``SimulatorOptions.resolve``'s result: host, port and symbols are filled in."""

    host: str = ""
    port: int = 0
    symbols: tuple[str, ...] = ()
