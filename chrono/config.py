"""config.toml as frozen, strict msgspec Structs: the shape of the config and nothing else.

A leaf: it knows no exchange, store or route. Reading a file, checking it against the exchange
registry and the store backends, and resolving ``env:`` keys and relative paths is
``chrono.configure`` (``load_config``). Unknown keys are rejected by the Structs themselves.
"""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal
from typing import Annotated, Literal

import msgspec

from chrono.model import MAX_DECIMAL_PLACES, Bounds, FeedRules

Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Section, frozen=True):
    host: Annotated[str, msgspec.Meta(min_length=1)] = "127.0.0.1"  # "" would bind everywhere
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    graceful_timeout_s: Positive = 5.0
    # A client that stops reading can pin hypercorn's send forever (docs/stack.md, trap 1).
    tcp_user_timeout_ms: PositiveInt = 20_000
    # A /stream message from a client larger than this closes its connection with 1009.
    stream_max_message_bytes: PositiveInt = 65_536


NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]


class StorageConfig(_Section, frozen=True):
    url: str = "sqlite:///chrono.db"
    # Batches wait here, fsync'd, while the store is down; replayed in order when it is back.
    spool_dir: str = "spool"
    spool_max_bytes: PositiveInt = 1 << 30  # full: the pipeline blocks (nothing is dropped)
    retry_initial_s: Positive = 0.5  # store retries: capped, jittered backoff
    retry_max_s: Positive = 30.0
    # PostgreSQL only
    pool_size: PositiveInt = 4  # read connections for the API (writes have their own)
    connect_timeout_s: Positive = 5.0
    timescaledb: Literal["auto", "off"] = "auto"  # auto: a hypertable when the server has it
    compress_after_days: NonNegativeInt = 7  # TimescaleDB compression; 0: none
    retention_days: NonNegativeInt = 0  # TimescaleDB drops older raw feeds; 0: keep all


class BatchConfig(_Section, frozen=True):
    max_feeds: PositiveInt = 100
    max_interval_ms: PositiveInt = 5000
    max_bytes: PositiveInt = 1_048_576


class LogConfig(_Section, frozen=True):
    level: Literal["debug", "info", "warn", "error"] = "info"
    format: Literal["json", "text"] = "json"


KeyRole = Literal["internal", "public", "admin"]
# A named key's name: what logs (and metrics) show instead of the key. No brackets, so it can
# never be one of the names the plain lists' keys get (``public_keys[0]``).
KeyName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
SHA256_PREFIX = "sha256:"  # a key written sha256:<64 hex> is the hash of the key clients send
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class KeyConfig(_Section, frozen=True):
    """One ``[[auth.keys]]`` entry; ``rate_per_min`` overrides the role's ``[limits]`` value
    (0: unlimited)."""

    name: KeyName
    role: KeyRole
    key: str  # the key, env:NAME, or sha256:<64 hex>
    rate_per_min: NonNegativeInt | None = None


class KeyEntry(msgspec.Struct, frozen=True):
    """A configured key with its name and where the config gives it (for error messages)."""

    where: str  # auth.public_keys[0], auth.keys[2].key
    name: str
    role: KeyRole
    key: str
    rate_per_min: int | None


class AuthConfig(_Section, frozen=True):
    internal_keys: list[str] = []  # named internal_keys[0], internal_keys[1]...
    public_keys: list[str] = []
    admin_keys: list[str] = []
    keys: list[KeyConfig] = []

    def entries(self) -> list[KeyEntry]:
        """Every key, the plain lists' first (named ``public_keys[0]``...), then ``keys``."""
        out = [
            KeyEntry(f"auth.{kind}[{i}]", f"{kind}[{i}]", role, key, None)
            for kind, role in _PLAIN_KEY_LISTS
            for i, key in enumerate(getattr(self, kind))
        ]
        out += [
            KeyEntry(f"auth.keys[{i}].key", k.name, k.role, k.key, k.rate_per_min)
            for i, k in enumerate(self.keys)
        ]
        return out

    def secrets(self) -> list[str]:
        """The keys a client could use, for log redaction (a sha256: entry holds none)."""
        return [e.key for e in self.entries() if not e.key.startswith(SHA256_PREFIX)]


_PLAIN_KEY_LISTS: tuple[tuple[str, KeyRole], ...] = (
    ("internal_keys", "internal"),
    ("public_keys", "public"),
    ("admin_keys", "admin"),
)


def key_digest(key: str) -> bytes:
    """The SHA-256 a presented key is compared by: of the key itself, or the one configured as
    ``sha256:<hex>`` (checked by ``_check_keys``)."""
    if key.startswith(SHA256_PREFIX):
        return bytes.fromhex(key.removeprefix(SHA256_PREFIX))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class LimitsConfig(_Section, frozen=True):
    """Token buckets: a key (or, on routes that need none, a client address) may make
    ``*_per_min`` requests in a burst, refilled continuously at that rate; 0: unlimited."""

    internal_per_min: NonNegativeInt = 5000
    public_per_min: NonNegativeInt = 1000
    admin_per_min: NonNegativeInt = 0
    unkeyed_per_min: NonNegativeInt = 600  # per client address
    stream_per_key: NonNegativeInt = 10  # open /stream connections per key
    stream_total: NonNegativeInt = 10_000  # open /stream connections in all


# "*", or a browser origin: scheme://host[:port], no path.
Origin = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(\*|https?://([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])"
        r"(:[0-9]{1,5})?)$"
    ),
]


class CorsConfig(_Section, frozen=True):
    """CORS on the public data routes (``/prices/*``, ``/aggregates/*``, ``/feed-values/*``)."""

    origins: list[Origin] = msgspec.field(default_factory=lambda: ["*"])  # []: no CORS
    max_age_s: NonNegativeInt = 600  # Access-Control-Max-Age of a preflight answer


class BoundsConfig(_Section, frozen=True):
    min: Decimal | None = None
    max: Decimal | None = None


class ValidationConfig(_Section, frozen=True):
    max_decimal_places: Annotated[int, msgspec.Meta(ge=0, le=30)] = MAX_DECIMAL_PLACES
    bounds: dict[str, BoundsConfig] = {}

    def rules(self) -> FeedRules:
        bounds = {s: Bounds(b.min, b.max) for s, b in self.bounds.items()}
        return FeedRules(max_places=self.max_decimal_places, bounds=bounds)


# msgspec has no bounds for Decimal: _check_consensus checks the signs of these.
NonNegativeDecimal = Decimal
PositiveDecimal = Decimal
ConsensusMethod = Literal["median", "volume_weighted", "time_decay"]
DEFAULT_STABLECOINS = ["USDT", "USDC", "DAI", "FDUSD", "TUSD", "USDP", "PYUSD", "BUSD"]


class SymbolConsensusConfig(_Section, frozen=True):
    """Per-symbol overrides of ``[consensus]``; unset keys take the section's value."""

    min_sources: PositiveInt | None = None
    max_deviation_bps: NonNegativeDecimal | None = None
    guard_bps: NonNegativeDecimal | None = None
    guard_window_s: Positive | None = None
    min: PositiveDecimal | None = None  # inputs outside [min, max] are out_of_bounds
    max: PositiveDecimal | None = None


class ConsensusConfig(_Section, frozen=True):
    """How ``/aggregates/consensus`` (and ``/prices/latest``'s freshness) judge inputs."""

    method: ConsensusMethod = "median"
    max_age_ms: PositiveInt = 300_000  # the seed's 5 minutes: older inputs are stale
    min_sources: PositiveInt = 2  # quorum; below it the price is null, never a thin value
    outlier_k: PositiveDecimal = Decimal(5)  # outlier past k x MAD from the initial median ...
    mad_floor_bps: NonNegativeDecimal = Decimal(10)  # ... MAD at least this share of it
    max_deviation_bps: NonNegativeDecimal = Decimal(0)  # also past this from it; 0: off
    depeg_bps: PositiveDecimal = Decimal(100)  # a stablecoin quote this far off par: excluded
    half_life_ms: PositiveInt = 14_000  # time_decay (Flare's example provider: ~14 s)
    guard_bps: NonNegativeDecimal = Decimal(0)  # withhold a jump this far from the recent mean
    guard_window_s: Positive = 300.0
    snapshot_interval_s: NonNegativeInt = 90  # the FTSO voting epoch; 0: no snapshots
    stablecoins: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_STABLECOINS))
    symbols: dict[str, SymbolConsensusConfig] = {}


class StreamConfig(_Section, frozen=True):
    """``/stream``: client queues, liveness, the replay ring, the consensus and status channels."""

    queue_messages: PositiveInt = 1000  # per client; behind that far: newest per symbol only
    send_timeout_s: Positive = 10.0  # behind (or a socket write blocked) this long: 1008
    heartbeat_s: Positive = 30.0
    ping_interval_s: Positive = 20.0  # WebSocket pings; no pong within pong_timeout_s: 1011
    pong_timeout_s: Positive = 20.0
    max_lifetime_s: Positive = 86_400.0  # then going_away and 1001; resume by seq
    reconnect_after_ms: NonNegativeInt = 5000  # going_away suggests a random wait below this
    replay_max_updates: PositiveInt = 100_000  # the ring since_seq replays from
    replay_max_age_s: Positive = 300.0
    consensus_check_ms: PositiveInt = 500  # how often the consensus channel recomputes
    consensus_interval_ms: PositiveInt = 5000  # an update at least this often ...
    consensus_deviation_bps: Annotated[float, msgspec.Meta(ge=0)] = 5.0  # ... or moved this far
    status_check_ms: PositiveInt = 1000  # how often source, symbol and store states are read


class ForwardConfig(_Section, frozen=True):
    """An edge Chrono: collectors only, every batch POSTed to a central Chrono's
    ``/internal/ingest`` (spooled while it is down, replayed in order); docs/edge.md."""

    url: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/]+(/[^\s]*)?$")]
    key: Annotated[str, msgspec.Meta(min_length=1)]  # an internal key of the central ("env:")
    worker_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "edge"
    timeout_s: Positive = 10.0  # a POST with no answer by then is retried


class AlertsConfig(_Section, frozen=True):
    """Alert rules and their thresholds (docs/alerts.md): each alert fires once when its
    condition has held for its time, and resolves once it has been clear ``hold_down_s``."""

    enabled: bool = True
    check_interval_s: Positive = 1.0
    hold_down_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0  # clear this long to resolve
    no_data_s: Positive = 60.0  # a collector with no data this long
    collector_down_s: Positive = 60.0  # a collector not streaming this long
    consecutive_failures: PositiveInt = 10  # connections in a row that failed before data
    ingest_error_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.05  # of POST /internal/ingest
    ingest_window_s: Positive = 300.0  # ... answers over this window
    ingest_min_requests: PositiveInt = 20  # ... once it has at least this many
    store_down_s: Positive = 10.0
    spool_fill: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.8
    below_quorum_s: Positive = 30.0  # a symbol's consensus short of min_sources this long
    webhooks: list[Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s]+$")]] = []
    webhook_timeout_s: Positive = 5.0
    webhook_retries: NonNegativeInt = 5  # a 5xx or no answer is retried, with backoff


class FtsoConfig(_Section, frozen=True):
    """Flare FTSOv2 feed-value endpoints (``POST /feed-values/...``)."""

    enabled: bool = False
    require_key: bool = False  # true: a public (or admin) key is needed


class SupervisorConfig(_Section, frozen=True):
    backoff_initial_s: Positive = 1.0
    backoff_max_s: Positive = 60.0
    healthy_after_s: Positive = 60.0  # a child that ran this long starts its backoff afresh
    restart_budget: PositiveInt = 10  # crashes allowed within budget_window_s ...
    budget_window_s: Positive = 600.0  # ... before the process exits 1 for systemd to restart it


class ServiceConfig(_Section, frozen=True):
    drain_timeout_s: Positive = 30.0  # SIGTERM: time to write what was received, then exit 1


class CollectorConfig(_Section, frozen=True):
    exchange: str
    symbols: list[str]
    id: str | None = None
    url: str | None = None
    protocol: str | None = None  # the exchange's wire version, where it has several (kraken)
    quote_aliases: dict[str, str] | None = None  # canonical quote -> native; None: exchange's
    # Freshness (chrono.collect.freshness): a symbol is stale past stale_factor x its own
    # typical gap, clamped to [stale_floor_s, stale_ceiling_s]; silence_timeout_s applies
    # until its pace is known. Stale symbols are resubscribed; all stale: reconnect.
    silence_timeout_s: Positive = 30.0
    stale_factor: Positive = 5.0
    stale_floor_s: Positive = 10.0
    stale_ceiling_s: Positive = 600.0
    rotate_after_s: Positive | None = None  # planned replacement; None: the exchange's default
    open_timeout_s: Positive = 10.0
    backoff_initial_s: Positive = 1.0
    backoff_max_s: Positive = 60.0

    @property
    def worker_id(self) -> str:
        return self.id or self.exchange


class Config(_Section, frozen=True):
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    batch: BatchConfig = BatchConfig()
    log: LogConfig = LogConfig()
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    cors: CorsConfig = CorsConfig()
    validation: ValidationConfig = ValidationConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    service: ServiceConfig = ServiceConfig()
    consensus: ConsensusConfig = ConsensusConfig()
    ftso: FtsoConfig = FtsoConfig()
    stream: StreamConfig = StreamConfig()
    alerts: AlertsConfig = AlertsConfig()
    forward: ForwardConfig | None = None  # set: this Chrono is an edge, it stores nothing
    collectors: list[CollectorConfig] = []

    def symbols(self) -> list[str]:
        """Every symbol the config names: collected, or given consensus settings."""
        named = [s for c in self.collectors for s in c.symbols]
        return list(dict.fromkeys([*named, *self.consensus.symbols]))
