"""The docs' links work on GitHub and in the installed collection.

README.md is also the collection's readme, and `ansible-galaxy collection build` leaves out what
galaxy.yml's build_ignore names (worker/, bench/, tests/ ...). So in README.md, docs/*.md and the
roles' READMEs:

- a relative link must name a file that exists and that the build ships, and an #anchor a heading
  of that file;
- a link to development material the build leaves out must be an absolute GitHub URL
  (https://github.com/queuefleet/queuefleet/blob/main/<path>) to a path that exists here;
- docs/ itself must ship, and README.md must link every page of it.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GITHUB = "https://github.com/queuefleet/queuefleet/"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "roles").glob("*/README.md"))]
# Pages another change of issue 27 adds; a link to one is checked once the file exists.
NOT_YET_ADDED: set[str] = set()

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~)")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(re.sub(r"`+[^`]*`+", "", line))
    return "\n".join(kept)


def slugs(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (duplicates get -1, -2 ...)."""
    found: set[str] = set()
    fenced = False
    for line in path.read_text().splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not heading:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1))  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def build_ignore() -> list[str]:
    return yaml.safe_load((ROOT / "galaxy.yml").read_text())["build_ignore"]


def shipped(rel: str) -> bool:
    """Whether `ansible-galaxy collection build` keeps the path (its build_ignore patterns are
    fnmatch patterns on paths relative to the collection root; an ignored directory drops its tree)."""
    parts = Path(rel).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return not any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes for pattern in build_ignore())


def links(doc: Path) -> list[str]:
    return LINK.findall(prose(doc.read_text()))


def check_target(doc: Path, rel: str, anchor: str) -> str | None:
    """Why the link to `rel` (relative to the repository) with `anchor` is broken, or None."""
    target = ROOT / rel
    if not target.exists():
        return None if rel in NOT_YET_ADDED else f"{rel} does not exist"
    if anchor and target.is_file() and target.suffix == ".md" and anchor not in slugs(target):
        return f"{rel} has no heading #{anchor}"
    return None


def problems(doc: Path) -> list[str]:
    found = []
    for url in links(doc):
        if url.startswith(("mailto:", "http://127.0.0.1", "http://localhost")):
            continue
        if url.startswith(("http://", "https://")):
            if not url.startswith(GITHUB):
                continue
            path = re.match(r"(?:blob|tree)/main/([^#?]*)(?:#(.*))?$", url[len(GITHUB):])
            if not path:
                if url.rstrip("/") + "/" != GITHUB and not url[len(GITHUB):].startswith(("issues", "#")):
                    found.append(f"{url}: expected {GITHUB}blob/main/<path> or tree/main/<path>")
                continue
            problem = check_target(doc, path.group(1).rstrip("/"), path.group(2) or "")
            if problem:
                found.append(f"{url}: {problem}")
            continue
        target, _, anchor = url.partition("#")
        if not target:  # an anchor in the same file
            if anchor not in slugs(doc):
                found.append(f"#{anchor}: no such heading in {doc.relative_to(ROOT)}")
            continue
        resolved = (doc.parent / target).resolve()
        try:
            rel = resolved.relative_to(ROOT).as_posix()
        except ValueError:
            found.append(f"{url}: points outside the repository")
            continue
        if not shipped(rel):
            found.append(f"{url}: {rel} is not in the built collection; link it as {GITHUB}blob/main/{rel}")
            continue
        problem = check_target(doc, rel, anchor)
        if problem:
            found.append(f"{url}: {problem}")
    return found


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_link_resolves_in_the_repository_and_in_the_built_collection(doc):
    assert not problems(doc), "\n".join(problems(doc))


def test_docs_ship_with_the_collection():
    assert shipped("docs/operations.md"), "galaxy.yml's build_ignore leaves docs/ out of the collection"
    assert not shipped("worker/README.md") and not shipped("bench/DEPLOY.md")  # the checker reads build_ignore right


def test_the_readme_links_every_page_of_docs():
    linked = {(ROOT / url.partition("#")[0]).resolve() for url in links(ROOT / "README.md") if not url.startswith("http")}
    missing = [page.name for page in sorted((ROOT / "docs").glob("*.md")) if page.resolve() not in linked]
    assert not missing, f"README.md does not link docs/{', docs/'.join(missing)}"


def test_the_checker_finds_broken_links(monkeypatch):
    page = ROOT / "docs" / "x.md"
    text = ("# Title\n[a](../worker/README.md) [b](missing.md) [c](#nowhere) [d](#title) "
            "[e](https://github.com/queuefleet/queuefleet/blob/main/bench/nope.md) `[f](ignored.md)`\n"
            "```\n[g](also-ignored.md)\n```\n")
    original = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: text if self == page else original(self, *a, **k))
    found = problems(page)
    assert len(found) == 4, found
    assert "not in the built collection" in found[0] and "does not exist" in found[1]
    assert "no such heading" in found[2] and "bench/nope.md does not exist" in found[3]
