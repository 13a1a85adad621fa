"""Config is strict: every error names the key path and the problem; `check-config` exits 2."""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from chrono.cli import main
from chrono.configure import load_config
from chrono.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

GOOD = """
[[collectors]]
exchange = "coinbase"
symbols = ["BTC/USD"]
"""


_KEY = '[[auth.keys]]\nname = "{}"\nrole = "{}"\nkey = "{}"\n'
_SHA_K_1 = "sha256:" + hashlib.sha256(b"k_1").hexdigest().upper()  # hex in either case


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_the_documented_example_loads() -> None:
    config = load_config(REPO / "config.toml")
    assert [c.worker_id for c in config.collectors] == [
        "coinbase", "kraken", "bitstamp", "binance_us", "binance"]  # fmt: skip
    assert all(c.symbols == ["BTC/USD", "ETH/USD"] for c in config.collectors)
    assert config.consensus.min_sources == 2
    assert config.consensus.snapshot_interval_s == 90
    assert config.ftso.enabled is False
    assert config.storage.url == f"sqlite:///{REPO / 'chrono.db'}"
    assert config.batch.max_feeds == 100
    assert config.batch.max_interval_ms == 5000
    assert config.batch.max_bytes == 1048576


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    config = load_config(write(tmp_path / "etc", GOOD))
    assert config.storage.url == f"sqlite:///{tmp_path / 'etc' / 'chrono.db'}"
    assert config.storage.spool_dir == str(tmp_path / "etc" / "spool")
    absolute = load_config(write(tmp_path, GOOD + '[storage]\nurl = "sqlite:////var/x.db"\n'))
    assert absolute.storage.url == "sqlite:////var/x.db"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD + "[server]\nprot = 1\n", "server: Object contains unknown field `prot`"),
        (GOOD + "[server]\nport = 'x'\n", "server.port: Expected `int`, got `str`"),
        (GOOD + "[server]\nport = 70000\n", "server.port: Expected `int` <= 65535"),
        (GOOD + "[batch]\nmax_feeds = 0\n", "batch.max_feeds: Expected `int` >= 1"),
        (GOOD + "[log]\nlevel = 'loud'\n", "log.level: Invalid enum value 'loud'"),
        ("colour = 1\n" + GOOD, "(top level): Object contains unknown field `colour`"),
        (
            '[[collectors]]\nexchange = "coinbase"\nsymbols = ["BTC/USD", "BTCUSD"]\n',
            "collectors[0].symbols[1]: 'BTCUSD' is not a canonical BASE/QUOTE symbol",
        ),
        (
            '[[collectors]]\nexchange = "mtgox"\nsymbols = ["BTC/USD"]\n',
            "collectors[0].exchange: unknown exchange 'mtgox'",
        ),
        ('[[collectors]]\nexchange = "coinbase"\n', "collectors[0]: Object missing required field"),
        (GOOD + GOOD, "collectors[1].id: duplicate collector id 'coinbase'"),
        (
            GOOD + '[validation.bounds."BTC/USD"]\nmin = "10"\nmax = "1"\n',
            "validation.bounds.BTC/USD: min 10 is above max 1",
        ),
        (GOOD + '[storage]\nurl = "mysql://x"\n', "storage.url: expected sqlite:///PATH"),
        (GOOD + '[consensus]\nmethod = "mean"\n', "consensus.method: Invalid enum value 'mean'"),
        (GOOD + "[consensus]\nmin_sources = 0\n", "consensus.min_sources: Expected `int` >= 1"),
        (GOOD + "[consensus]\noutlier_k = 0\n", "consensus.outlier_k: must be above 0"),
        (GOOD + "[consensus]\nguard_bps = -1\n", "consensus.guard_bps: must be at least 0"),
        (GOOD + '[consensus]\ndepeg_bps = "nan"\n', "consensus.depeg_bps: NaN is not a finite"),
        (GOOD + '[consensus]\nstablecoins = ["usdt"]\n', "consensus.stablecoins[0]: 'usdt'"),
        (GOOD + "[consensus]\nsnapshot_interval_s = -90\n", "consensus.snapshot_interval_s"),
        (
            GOOD + '[consensus.symbols."BTC/USD"]\nmin = 10\nmax = 1\n',
            "consensus.symbols.BTC/USD: min 10 is above max 1",
        ),
        (GOOD + '[consensus.symbols."btcusd"]\n', "consensus.symbols.btcusd: 'btcusd' is not"),
        (GOOD + "[ftso]\nenabled = 1\n", "ftso.enabled: Expected `bool`"),
        (
            GOOD + '[storage]\nurl = "postgresql://u:pw@db/x?colour=red"\n',
            'storage.url: not a valid PostgreSQL URL (invalid URI query parameter: "colour")',
        ),
        (GOOD + "[storage]\nretention_days = 2\n", "storage.retention_days: at least 5"),
        (GOOD + "[storage]\nspool_max_bytes = 0\n", "storage.spool_max_bytes: Expected `int` >= 1"),
        (GOOD + "[storage]\ntimescaledb = 'yes'\n", "storage.timescaledb: Invalid enum value"),
        (
            GOOD + "[storage]\nretry_initial_s = 60\nretry_max_s = 1\n",
            "storage.retry_initial_s: above retry_max_s",
        ),
        (GOOD + '[auth]\nadmin_keys = ["env:CHRONO_TEST_UNSET_KEY"]\n', "auth.admin_keys[0]"),
        (GOOD + 'protocol = "v9"\n', "collectors[0].protocol: coinbase has no protocol 'v9'"),
        (GOOD + 'quote_aliases = {usd = "USDT"}\n', "collectors[0].quote_aliases.usd: quotes"),
        (GOOD + "stale_floor_s = 900\n", "collectors[0].stale_floor_s: above stale_ceiling_s"),
        (GOOD + "rotate_after_s = 0\n", "collectors[0].rotate_after_s: Expected `float` > 0.0"),
        (
            GOOD.replace('["BTC/USD"]', str([f"C{i}/USD" for i in range(501)])),
            "collectors[0].symbols: coinbase allows 500 per connection",
        ),
        (
            GOOD.replace('["BTC/USD"]', '["BTC/USD", "ETH/USD", "BTC/USD"]'),
            "collectors[0].symbols[2]: 'BTC/USD' is listed twice",
        ),
        (
            GOOD + "backoff_initial_s = 90\n",
            "collectors[0].backoff_initial_s: above backoff_max_s",
        ),
        (
            GOOD + "[supervisor]\nbackoff_initial_s = 120\n",
            "supervisor.backoff_initial_s: above backoff_max_s",
        ),
        (
            GOOD + "silence_timeout_s = inf\n",
            "collectors[0].silence_timeout_s: inf is not a finite",
        ),
        (GOOD + "[server]\ngraceful_timeout_s = inf\n", "server.graceful_timeout_s: inf is not"),
        (GOOD + "[storage]\nretry_max_s = nan\n", "storage.retry_max_s: nan is not a finite"),
        (
            GOOD + '[validation.bounds."BTC/USD"]\nmax = "Infinity"\n',
            "validation.bounds.BTC/USD.max: Infinity is not a finite number",
        ),
        (GOOD + '[auth]\npublic_keys = [""]\n', "auth.public_keys[0]: an empty key"),
        (GOOD + '[auth]\nadmin_keys = ["ok_key", "  "]\n', "auth.admin_keys[1]: an empty key"),
        (GOOD + '[auth]\npublic_keys = ["a key"]\n', "auth.public_keys[0]: a key cannot contain"),
        (
            GOOD + '[auth]\npublic_keys = ["k_1"]\nadmin_keys = ["k_1"]\n',
            "auth.admin_keys[0]: the same key is already auth.public_keys[0]",
        ),
        (
            GOOD + _KEY.format("a", "public", "k_1") + _KEY.format("a", "admin", "k_2"),
            "auth.keys[1].name: 'a' is already the name of auth.keys[0]",
        ),
        (
            GOOD + _KEY.format("a", "public", "sha256:" + "0" * 63),
            "auth.keys[0].key: sha256: must be followed by 64 hex digits",
        ),
        (
            GOOD + _KEY.format("a", "public", "sha256:" + "g" * 64),
            "auth.keys[0].key: sha256: must be followed by 64 hex digits",
        ),
        (GOOD + _KEY.format("a", "root", "k_1"), "auth.keys[0].role: Invalid enum value 'root'"),
        (GOOD + _KEY.format("a b", "public", "k_1"), "auth.keys[0].name: Expected `str` matching"),
        (GOOD + _KEY.format("a", "public", ""), "auth.keys[0].key: an empty key"),
        (
            GOOD + '[auth]\npublic_keys = ["k_1"]\n' + _KEY.format("a", "admin", _SHA_K_1),
            "auth.keys[0].key: the same key is already auth.public_keys[0]",
        ),
        (
            GOOD + _KEY.format("a", "public", "env:CHRONO_TEST_UNSET_KEY"),
            "auth.keys[0].key: environment variable CHRONO_TEST_UNSET_KEY is not set",
        ),
        (
            GOOD + _KEY.format("a", "public", "k_1") + "rate_per_min = -1\n",
            "auth.keys[0].rate_per_min: Expected `int` >= 0",
        ),
        (GOOD + _KEY.format("a", "public", "k_1") + "colour = 1\n", "auth.keys[0]: Object"),
        (GOOD + "[limits]\npublic_per_min = -5\n", "limits.public_per_min: Expected `int` >= 0"),
        (GOOD + "[limits]\nwindow_s = 1\n", "limits: Object contains unknown field `window_s`"),
        (
            GOOD + '[cors]\norigins = ["https://a.example/path"]\n',
            "cors.origins[0]: Expected `str` matching",
        ),
        (GOOD + '[server]\nhost = ""\n', "server.host: Expected `str` of length >= 1"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)


def test_keys_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHRONO_TEST_ADMIN", "s3cret-admin")
    config = load_config(write(tmp_path, GOOD + '[auth]\nadmin_keys = ["env:CHRONO_TEST_ADMIN"]\n'))
    assert config.auth.admin_keys == ["s3cret-admin"]


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[server\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_check_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(write(tmp_path, GOOD + "[batch]\nmax_feed = 1\n"))]) == 2
    assert "batch: Object contains unknown field `max_feed`" in capsys.readouterr().err


def test_check_config_prints_the_effective_config_with_keys_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config", str(REPO / "config.toml")]) == 0
    out = capsys.readouterr().out
    assert '"max_feeds": 100' in out
    assert "chrono_admin_dev_key_001" not in out
    assert "*** (24 chars)" in out


def test_check_config_hides_the_store_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql://chrono:pa55word@db.internal:5433/prices"
    assert main(["check-config", str(write(tmp_path, GOOD + f'[storage]\nurl = "{url}"\n'))]) == 0
    out = capsys.readouterr().out
    assert "pa55word" not in out
    assert '"url": "postgresql://chrono:***@db.internal:5433/prices"' in out


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chrono", "check-config", str(write(tmp_path, "[x]\n"))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "(top level): Object contains unknown field `x`" in result.stderr


def test_config_is_a_leaf() -> None:
    """The Structs know no exchange, store or route: only the feed model's rules and bounds."""
    tree = ast.parse((REPO / "chrono" / "config.py").read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert {m for m in imported if m.startswith("chrono")} == {"chrono.model"}


def test_stores_are_found_by_url_scheme(tmp_path: Path) -> None:
    from chrono.store import PostgresStore, SQLiteStore, open_store
    from chrono.store.backends import BACKENDS

    sqlite = load_config(write(tmp_path, GOOD + '[storage]\nurl = "sqlite:///x/chrono.db"\n'))
    postgres = load_config(write(tmp_path, GOOD + '[storage]\nurl = "postgres://u@h/db"\n'))
    assert isinstance(open_store(sqlite.storage), SQLiteStore)
    assert isinstance(open_store(postgres.storage), PostgresStore)
    assert sqlite.storage.url == f"sqlite:///{tmp_path / 'x' / 'chrono.db'}"  # resolved by it
    assert postgres.storage.url == "postgres://u@h/db"
    assert [b.name for b in BACKENDS] == ["sqlite", "postgresql"]
