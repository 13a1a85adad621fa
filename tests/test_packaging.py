"""What a user installs: the sdist and the wheel built from a copy of the repository (as a bare
clone has it) hold the package and its metadata, not the tests or their recorded frames, and the
`chrono` the wheel installs runs: it collects from a simulator, serves, and drains on SIGTERM."""

from __future__ import annotations

import email
import email.message
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest
import trio

import chrono
from chrono.testing.process import open_chrono
from chrono.testing.simulators import CoinbaseSimulator
from tests.conftest import PUBLIC_KEY
from tests.daemon import write_config
from tests.repository import copy_to, files
from tests.waiting import wait_until

BUILD_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel, built by ``python -m build`` from a copy of the repository."""
    source = copy_to(tmp_path_factory.mktemp("clone"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=BUILD_TIMEOUT_S,
    )
    [sdist] = out.glob("*.tar.gz")
    [wheel] = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


def package_modules() -> set[str]:
    return {str(name) for name in files() if name.parts[0] == "chrono" and name.suffix == ".py"}


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(name))


def test_the_wheel_holds_every_module_and_nothing_of_the_tests(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(f"chrono-{chrono.__version__}.dist-info/entry_points.txt")
    assert package_modules() <= names  # chrono/testing too: `chrono simulate` serves from it
    assert "chrono/py.typed" in names
    assert f"chrono-{chrono.__version__}.dist-info/licenses/LICENSE" in names
    assert {name.split("/")[0] for name in names} == {
        "chrono",
        f"chrono-{chrono.__version__}.dist-info",
    }
    assert not [name for name in names if name.endswith((".jsonl", ".db"))]
    assert "chrono = chrono.cli:main" in entry_points.decode()


def test_the_wheel_says_what_it_is(dists: dict[str, Path]) -> None:
    meta = wheel_metadata(dists["wheel"])
    assert meta["Name"] == "chrono"
    assert meta["Version"] == chrono.__version__
    assert meta["License-Expression"] == "MIT"
    assert meta["License-File"] == "LICENSE"
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "Two commands" in str(meta.get_payload())  # README.md is the long description
    urls = dict(url.split(", ", 1) for url in meta.get_all("Project-URL", []))
    assert {"Homepage", "Documentation", "Changelog", "Issues"} <= set(urls)
    assert all(url.startswith("https://") for url in urls.values())
    classifiers = meta.get_all("Classifier", [])
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert "Framework :: Trio" in classifiers
    assert "Typing :: Typed" in classifiers
    requires = meta.get_all("Requires-Dist", [])
    for package in ("trio", "websockets", "hypercorn", "quart-trio", "psycopg", "msgspec", "httpx"):
        assert any(r.startswith(package) and "extra ==" not in r for r in requires), package


def test_the_sdist_holds_the_package_and_its_docs_not_the_tests(dists: dict[str, Path]) -> None:
    root = f"chrono-{chrono.__version__}"
    with tarfile.open(dists["sdist"]) as archive:
        names = {name.removeprefix(f"{root}/") for name in archive.getnames()}
    assert package_modules() <= names
    expected = {"pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "config.toml", "PKG-INFO"}
    assert expected <= names
    assert {"docs/architecture.md", "docs/stack.md", "docs/exchanges.md"} <= names
    top = {name.split("/")[0] for name in names}
    assert not top & {"tests", "bench", ".ci", "scripts", ".venv"}
    assert not [name for name in names if name.endswith((".jsonl", ".db"))]


async def test_the_installed_wheel_runs_chrono(
    dists: dict[str, Path], tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "site"
    await trio.run_process(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--disable-pip-version-check", "--target", str(target), str(dists["wheel"])],
    )  # fmt: skip
    monkeypatch.setenv("PYTHONPATH", str(target))  # the wheel's chrono, this venv's dependencies
    # Mark the installed copy, so that what answers below is the wheel's chrono, not the checkout.
    installed = target / "chrono" / "__init__.py"
    marked = f"{chrono.__version__}+wheel"
    installed.write_text(installed.read_text().replace(f'"{chrono.__version__}"', f'"{marked}"'))
    script = target / "bin" / "chrono"
    version = await trio.run_process([str(script), "--version"], capture_stdout=True)
    assert version.stdout.decode().strip() == f"chrono {marked}"

    sim = CoinbaseSimulator(tick_interval_s=0.01)
    await nursery.start(sim.serve)
    config = await write_config(tmp_path, sim.url)
    with trio.fail_after(30):
        async with open_chrono(config, command=[str(script), "run", str(config)]) as daemon:
            async with httpx.AsyncClient(base_url=daemon.url) as http:
                await wait_until(lambda: len(sim.ticks) >= 10)

                async def priced() -> bool:
                    response = await http.get(
                        "/prices/latest",
                        params={"symbols": "BTC/USD"},
                        headers={"Authorization": f"Bearer {PUBLIC_KEY}"},
                    )
                    return response.status_code == 200

                while not await priced():
                    await trio.sleep(0.05)
            assert await daemon.stop() == 0
    assert "drained" in daemon.messages()
