"""The documentation a clean clone shows: every image the README and docs/ embed and every file
they link is tracked by git (an ignored or missing file would be a broken link on a clone), and
every `#anchor` they link names a heading of its page as GitHub spells it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def tracked_files() -> set[str]:
    """Every file git tracks, as a path relative to the repository root."""
    listing = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(listing.stdout.splitlines())


def pages() -> list[Path]:
    """The README and every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def local_targets(page: Path) -> list[str]:
    """The page's links to files of the repository (web links, in-page anchors and code blocks left
    out)."""
    prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    targets = [match.group(1).split("#")[0] for match in LINK.finditer(prose)]
    return [t for t in targets if t and not re.match(r"[a-z]+:", t)]


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs a git checkout")
@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_every_linked_file_is_committed(page: Path):
    tracked = tracked_files()
    folders = {p.as_posix() for f in tracked for p in Path(f).parents}
    missing = []
    for target in local_targets(page):
        path = (page.parent / target).resolve().relative_to(ROOT).as_posix()
        if path not in tracked and path.rstrip("/") not in folders:
            missing.append(target)
    assert missing == [], f"{page.relative_to(ROOT)} links files a clone does not have: {missing}"


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation other than `-` and `_`
    dropped, each space a `-`; a repeated heading gets `-1`, `-2`, ..."""
    prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", prose, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        repeat = 0
        while (anchor := slug + (f"-{repeat}" if repeat else "")) in anchors:
            repeat += 1
        anchors.add(anchor)
    return anchors


def linked_anchors(page: Path) -> list[tuple[Path, str]]:
    """The page's links into Markdown pages of the repository with an anchor: (page, anchor)."""
    prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    found = []
    for match in LINK.finditer(prose):
        target, _, anchor = match.group(1).partition("#")
        if anchor and not re.match(r"[a-z]+:", target) and (not target or target.endswith(".md")):
            found.append(((page.parent / target).resolve() if target else page, anchor))
    return found


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_every_linked_anchor_names_a_heading(page: Path):
    broken = [
        f"{target.relative_to(ROOT)}#{anchor}"
        for target, anchor in linked_anchors(page)
        if anchor not in heading_anchors(target)
    ]
    assert broken == [], f"{page.relative_to(ROOT)} links anchors no heading has: {broken}"


def test_anchors_are_spelled_as_github_spells_them(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("# Top\n## timm backbones (`--arch timm:NAME`)\n## Top\n```\n# not a heading\n```\n")
    assert heading_anchors(page) == {"top", "timm-backbones---arch-timmname", "top-1"}


def test_the_readme_embeds_the_committed_demo_figure():
    assert "docs/results/demo/anytime.png" in local_targets(ROOT / "README.md")


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs a git checkout")
@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_the_docs_stand_on_their_own(page: Path):
    """The repository documents itself: no page sends the reader to a file outside it, by link or
    by naming a Markdown page the clone does not hold."""
    assert all(not target.startswith("../..") for target in local_targets(page))
    held = {Path(f).name for f in tracked_files() if f.endswith(".md")}
    named = set(re.findall(r"[\w.-]+\.md\b", page.read_text()))
    assert named <= held, f"{page.relative_to(ROOT)} names pages a clone does not have: {named - held}"
