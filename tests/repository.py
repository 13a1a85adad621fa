"""The files the repository holds, as a bare clone would have them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Made by tools, never part of the repository (the same as .gitignore).
_GENERATED = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
_GENERATED_SUFFIXES = (".egg-info", ".pyc", ".db", ".db-wal", ".db-shm")
_GENERATED_AT_ROOT = {"build", "dist", "spool"}


def files() -> list[Path]:
    """Every file a commit would hold, relative to the root: the tracked ones and the new ones
    git does not ignore. Outside a git checkout (an unpacked archive), the tree minus what tools
    generate."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        return sorted(path.relative_to(ROOT) for path in walk(ROOT))
    return sorted(Path(name) for name in listed.split("\0") if name and (ROOT / name).is_file())


def walk(folder: Path) -> list[Path]:
    """Every file below ``folder``, minus what tools generate (the listing without git)."""
    found: list[Path] = []
    for path in folder.iterdir():
        if path.name in _GENERATED or path.name.endswith(_GENERATED_SUFFIXES):
            continue
        if folder == ROOT and path.name in _GENERATED_AT_ROOT:
            continue
        found += walk(path) if path.is_dir() else [path]
    return found


def copy_to(target: Path) -> Path:
    """A copy of the repository's files in ``target``, as a fresh clone would have them."""
    for name in files():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target / name)
    return target


def text_files() -> dict[Path, str]:
    """Every file of the repository that is UTF-8 text, with its text."""
    texts: dict[Path, str] = {}
    for name in files():
        try:
            texts[name] = (ROOT / name).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
    return texts
