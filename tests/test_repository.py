"""The repository stands on its own: nothing in it reaches for a folder beside the clone, every
document it points at is inside it, and the recorded frames carry their source and licence."""

from __future__ import annotations

import re
from pathlib import Path

from tests.recorded import CAPTURES
from tests.repository import ROOT, files, text_files, walk

# A path out of the clone into the folder the project grew up beside (written so that this file
# does not match itself), or a Python path built to reach it.
OUTSIDE = re.compile(r"\.\.[/\\]shared|[/]\s*[\"']shared[\"']")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")  # a Markdown link's target
MD_MENTION = re.compile(r"(?<![\w./-])((?:[\w-]+/)*[\w-]+\.md)\b")  # docs/stack.md, README.md
SECTION_CITE = re.compile(r"docs/exchanges\.md('s)? §(\d+)")
TRAP_CITE = re.compile(r"docs/stack\.md, trap (\d+)")


def test_the_repository_is_listed() -> None:
    listed = {str(name) for name in files()}
    assert {"README.md", "pyproject.toml", "chrono/cli.py", "tests/test_repository.py"} <= listed
    assert not any(name.startswith((".venv/", ".git/")) for name in listed)


def test_outside_git_the_walk_still_sees_every_file() -> None:
    """An unpacked archive has no .git: the fallback walk must miss nothing a clone holds."""
    walked = {path.relative_to(ROOT) for path in walk(ROOT)}
    assert set(files()) <= walked
    assert not any(part in {".git", ".venv", "__pycache__"} for p in walked for part in p.parts)


def test_nothing_refers_to_a_folder_beside_the_clone() -> None:
    found = [
        f"{name}:{number}: {line.strip()}"
        for name, text in text_files().items()
        for number, line in enumerate(text.splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == []


def test_the_check_itself_catches_what_it_is_for() -> None:
    escape = "../" + "shared/captures"
    assert OUTSIDE.search(f"recorded in `{escape}/`")
    assert OUTSIDE.search("Path(__file__).resolve().parents[2] / " + '"shared" / "captures"')
    assert not OUTSIDE.search("see docs/stack.md and tests/captures/README.md")


def test_every_markdown_link_and_document_named_resolves() -> None:
    """A link in a Markdown file resolves from its folder; a document named anywhere (as
    ``docs/stack.md``, or a bare ``README.md``) is a file of the repository."""
    names = files()
    basenames = {name.name for name in names}
    broken = []
    for name, text in text_files().items():
        if name.suffix == ".md":
            links = [link for link in LINK.findall(text) if "://" not in link]
            broken += [
                f"{name}: link {link}"
                for link in links
                if not ((ROOT / name).parent / link).resolve().exists()
            ]
        local = "\n".join(line for line in text.splitlines() if "://" not in line)
        for mention in MD_MENTION.findall(local):  # a name beside a URL is that site's file
            known = mention in basenames if "/" not in mention else (ROOT / mention).is_file()
            if not known and not ((ROOT / name).parent / mention).is_file():
                broken += [f"{name}: names {mention}"]
    assert broken == []


def numbered_headings(doc: Path) -> set[int]:
    return {int(n) for n in re.findall(r"^## (\d+)\. ", doc.read_text(), flags=re.MULTILINE)}


def numbered_traps(doc: Path) -> set[int]:
    return {int(n) for n in re.findall(r"^(\d+)\. \*\*", doc.read_text(), flags=re.MULTILINE)}


def test_section_and_trap_citations_point_at_what_exists() -> None:
    sections = numbered_headings(ROOT / "docs" / "exchanges.md")
    traps = numbered_traps(ROOT / "docs" / "stack.md")
    assert set(range(10)) <= sections
    assert set(range(1, 14)) <= traps
    cited_sections = set()
    cited_traps = set()
    for text in text_files().values():
        flat = " ".join(text.split())  # a citation may wrap across lines
        cited_sections |= {int(n) for _, n in SECTION_CITE.findall(flat)}
        cited_traps |= {int(n) for n in TRAP_CITE.findall(flat)}
    assert cited_sections, "the code cites docs/exchanges.md by section"
    assert cited_sections <= sections
    assert cited_traps <= traps


def test_recordings_carry_their_source_and_licence() -> None:
    readme = (CAPTURES / "README.md").read_text()
    licence = (CAPTURES / "LICENSE.cryptofeed").read_text()
    assert "Bryant Moscon" in licence
    assert "github.com/bmoscon/cryptofeed" in readme
    recordings = sorted(path.name for path in CAPTURES.glob("*.jsonl"))
    assert len(recordings) == 5
    assert [name for name in recordings if f"`{name}`" not in readme] == []
