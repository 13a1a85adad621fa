"""Reading config.toml into a checked ``Config``: the checks that need more than the Structs.

``load_config(path)`` returns a ``Config`` or raises ``ConfigError`` whose message names the key
path and the problem (``collectors[0].symbols[1]: 'BTCUSD' is not a canonical BASE/QUOTE
symbol``). Beyond the Structs' own types and ranges it checks the config against what the rest
of Chrono knows: the exchange registry (names, wire versions, stream limits) and the store
backends (``chrono.store.backends``, by URL scheme). Values written ``"env:NAME"`` in ``[auth]``
are read from the environment. A relative store path and ``spool_dir`` are resolved against the
config file's folder, so the service behaves the same from any working directory.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from chrono.config import (
    _PLAIN_KEY_LISTS,
    _SHA256_HEX,
    SHA256_PREFIX,
    AuthConfig,
    CollectorConfig,
    Config,
    ConsensusConfig,
    StorageConfig,
    key_digest,
)
from chrono.errors import ConfigError
from chrono.exchanges import EXCHANGES
from chrono.model import is_canonical_symbol
from chrono.store.backends import backend_for, schemes
from chrono.store.timescale import MIN_RETENTION_DAYS
from chrono.store.urls import masked_url

_PATH = re.compile(r" - at `\$(.*)`$")


def _key_error(exc: msgspec.ValidationError) -> ConfigError:
    """Turn msgspec's ``Expected int - at `$.server.port``` into ``server.port: Expected int``."""
    text = str(exc)
    match = _PATH.search(text)
    path = match.group(1).lstrip(".") if match else ""
    problem = text[: match.start()] if match else text
    return ConfigError(f"{path or '(top level)'}: {problem}")


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, validate and resolve a config file; raise ``ConfigError`` naming the bad key."""
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    return parse_config(raw, base_dir=file.resolve().parent)


def parse_config(raw: dict[str, Any], *, base_dir: Path) -> Config:
    _check_finite(raw, "")
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise _key_error(exc) from exc
    _check(config)
    auth = _resolve_env(config.auth)
    _check_keys(auth)
    forward = config.forward
    if forward is not None and forward.key.startswith("env:"):
        value = os.environ.get(forward.key[4:])
        if not value:
            raise ConfigError(f"forward.key: environment variable {forward.key[4:]} is not set")
        forward = msgspec.structs.replace(forward, key=value)
    return msgspec.structs.replace(
        config, auth=auth, forward=forward, storage=_resolve_paths(config.storage, base_dir)
    )


def _check_finite(value: Any, path: str) -> None:
    """TOML has ``inf`` and ``nan``; no Chrono setting means either (a timeout of ``inf`` is
    a hang, a bound of ``nan`` compares false both ways)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path or '(top level)'}: {value} is not a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_finite(item, f"{path}[{i}]")


def _check(config: Config) -> None:
    seen: set[str] = set()
    for i, col in enumerate(config.collectors):
        where = f"collectors[{i}]"
        if col.exchange not in EXCHANGES:
            known = ", ".join(sorted(EXCHANGES))
            raise ConfigError(f"{where}.exchange: unknown exchange {col.exchange!r} ({known})")
        if not col.symbols:
            raise ConfigError(f"{where}.symbols: at least one symbol is needed")
        for j, symbol in enumerate(col.symbols):
            if not is_canonical_symbol(symbol):
                raise ConfigError(
                    f"{where}.symbols[{j}]: {symbol!r} is not a canonical BASE/QUOTE symbol"
                )
            if symbol in col.symbols[:j]:
                raise ConfigError(f"{where}.symbols[{j}]: {symbol!r} is listed twice")
        if col.worker_id in seen:
            raise ConfigError(f"{where}.id: duplicate collector id {col.worker_id!r}")
        seen.add(col.worker_id)
        if col.url is not None and not col.url.startswith(("ws://", "wss://")):
            raise ConfigError(f"{where}.url: must start with ws:// or wss://")
        _check_exchange(col, where)
    for symbol, b in config.validation.bounds.items():
        where = f"validation.bounds.{symbol}"
        if not is_canonical_symbol(symbol):
            raise ConfigError(f"{where}: {symbol!r} is not a canonical BASE/QUOTE symbol")
        for side, bound in (("min", b.min), ("max", b.max)):
            if bound is not None and not bound.is_finite():
                raise ConfigError(f"{where}.{side}: {bound} is not a finite number")
        if b.min is not None and b.max is not None and b.min > b.max:
            raise ConfigError(f"{where}: min {b.min} is above max {b.max}")
    _check_consensus(config.consensus)
    if config.supervisor.backoff_initial_s > config.supervisor.backoff_max_s:
        raise ConfigError("supervisor.backoff_initial_s: above backoff_max_s")
    _check_storage(config.storage)


def _check_consensus(consensus: ConsensusConfig) -> None:
    positive = ("outlier_k", "depeg_bps")
    for name in ("outlier_k", "mad_floor_bps", "max_deviation_bps", "depeg_bps", "guard_bps"):
        _check_decimal(f"consensus.{name}", getattr(consensus, name), positive=name in positive)
    for i, coin in enumerate(consensus.stablecoins):
        if not (coin.isalnum() and coin.isupper()):
            raise ConfigError(f"consensus.stablecoins[{i}]: {coin!r} is not an upper-case quote")
    for symbol, own in consensus.symbols.items():
        where = f"consensus.symbols.{symbol}"
        if not is_canonical_symbol(symbol):
            raise ConfigError(f"{where}: {symbol!r} is not a canonical BASE/QUOTE symbol")
        for name in ("max_deviation_bps", "guard_bps", "min", "max"):
            value = getattr(own, name)
            if value is not None:
                _check_decimal(f"{where}.{name}", value, positive=name in ("min", "max"))
        if own.min is not None and own.max is not None and own.min > own.max:
            raise ConfigError(f"{where}: min {own.min} is above max {own.max}")


def _check_decimal(where: str, value: Decimal, *, positive: bool) -> None:
    if not value.is_finite():
        raise ConfigError(f"{where}: {value} is not a finite number")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{where}: must be {'above' if positive else 'at least'} 0")


def _check_storage(storage: StorageConfig) -> None:
    backend = backend_for(storage.url)
    if backend is None:
        raise ConfigError(f"storage.url: expected {schemes()}")
    if problem := backend.problem(storage):
        raise ConfigError(problem)
    if 0 < storage.retention_days < MIN_RETENTION_DAYS:  # a TimescaleDB setting, checked always
        raise ConfigError(
            f"storage.retention_days: at least {MIN_RETENTION_DAYS} (the candle aggregates "
            "refresh the last 4 days), or 0 to keep every feed"
        )
    if storage.retry_initial_s > storage.retry_max_s:
        raise ConfigError("storage.retry_initial_s: above retry_max_s")


def _check_exchange(col: CollectorConfig, where: str) -> None:
    """What only the exchange's registry entry knows: versions, quotes, its stream limit."""
    entry = EXCHANGES[col.exchange]
    try:
        exchange = entry.protocol(col.protocol)
    except KeyError:
        known = ", ".join(sorted({entry.version, *entry.protocols} - {""})) or "none"
        raise ConfigError(
            f"{where}.protocol: {col.exchange} has no protocol {col.protocol!r} ({known})"
        ) from None
    for quote, native in (col.quote_aliases or {}).items():
        if not (quote.isalnum() and native.isalnum() and quote.isupper() and native.isupper()):
            raise ConfigError(
                f"{where}.quote_aliases.{quote}: quotes are upper-case letters and digits"
            )
    limit = exchange.limits.max_symbols
    if len(col.symbols) > limit:
        raise ConfigError(
            f"{where}.symbols: {col.exchange} allows {limit} per connection; "
            "split them over several collectors"
        )
    if col.stale_floor_s > col.stale_ceiling_s:
        raise ConfigError(f"{where}.stale_floor_s: above stale_ceiling_s")
    if col.backoff_initial_s > col.backoff_max_s:
        raise ConfigError(f"{where}.backoff_initial_s: above backoff_max_s")


def _resolve_env(auth: AuthConfig) -> AuthConfig:
    def resolve(where: str, key: str) -> str:
        if not key.startswith("env:"):
            return key
        name = key[4:]
        value = os.environ.get(name)
        if not value:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return value

    lists = {
        kind: [resolve(f"auth.{kind}[{i}]", k) for i, k in enumerate(getattr(auth, kind))]
        for kind, _ in _PLAIN_KEY_LISTS
    }
    keys = [
        msgspec.structs.replace(k, key=resolve(f"auth.keys[{i}].key", k.key))
        for i, k in enumerate(auth.keys)
    ]
    return AuthConfig(**lists, keys=keys)


def _check_keys(auth: AuthConfig) -> None:
    """No empty key (it would open a role to a blank header), no key in two places (which role
    and name would it get?), a ``sha256:`` key of 64 hex digits, no name twice. The messages
    name the key's place in the config, never the key."""
    seen: dict[bytes, str] = {}
    names: dict[str, str] = {}
    for entry in auth.entries():
        where, key = entry.where, entry.key
        if not key.strip():
            raise ConfigError(f"{where}: an empty key")
        if any(c.isspace() for c in key):
            raise ConfigError(f"{where}: a key cannot contain spaces")
        if key.startswith(SHA256_PREFIX) and not _SHA256_HEX.fullmatch(
            key.removeprefix(SHA256_PREFIX)
        ):
            raise ConfigError(f"{where}: {SHA256_PREFIX} must be followed by 64 hex digits")
        digest = key_digest(key)
        if digest in seen:
            raise ConfigError(f"{where}: the same key is already {seen[digest]}")
        seen[digest] = where
        if entry.name in names:
            place = where.removesuffix(".key")
            raise ConfigError(
                f"{place}.name: {entry.name!r} is already the name of {names[entry.name]}"
            )
        names[entry.name] = where.removesuffix(".key")


def _resolve_paths(storage: StorageConfig, base_dir: Path) -> StorageConfig:
    backend = backend_for(storage.url)
    url = storage.url if backend is None else backend.resolve(storage.url, base_dir)
    spool_dir = str(base_dir / storage.spool_dir)
    return msgspec.structs.replace(storage, url=url, spool_dir=spool_dir)


def masked(config: Config) -> dict[str, Any]:
    """The effective config as plain data, keys masked, for ``chrono check-config``."""
    data: dict[str, Any] = msgspec.to_builtins(config)
    auth = data["auth"]
    for kind, _ in _PLAIN_KEY_LISTS:
        auth[kind] = [_masked_key(k) for k in auth[kind]]
    for entry in auth["keys"]:
        entry["key"] = _masked_key(entry["key"])
    data["storage"]["url"] = masked_url(config.storage.url)
    return data


def _masked_key(key: str) -> str:
    return f"{SHA256_PREFIX}***" if key.startswith(SHA256_PREFIX) else f"*** ({len(key)} chars)"
