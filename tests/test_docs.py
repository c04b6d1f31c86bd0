"""The front door stays short and every relative link in the docs points at a file that exists."""

from __future__ import annotations

import os
import re

import pytest

from conftest import ROOT

DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target); the target up to the first space or ")" (a "title" may follow)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# Written by another part of #15; the README links it already.
PENDING = {"docs/multi-gpu.md"}


def _links(doc):
    """(file, anchor) of every relative link; file "" for an in-page anchor."""
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)  # not in code blocks
    for target in LINK.findall(text):
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # not https:, mailto:
            path, _, anchor = target.partition("#")
            yield path, anchor


def _relative_links(doc):
    return [path for path, _ in _links(doc) if path]


def _anchors(doc):
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    heads = re.findall(r"^#+\s+(.+?)\s*$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def test_readme_is_at_most_150_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail to docs/"


def test_readme_links_every_doc():
    links = set(_relative_links(ROOT / "README.md"))
    assert {"CONTRIBUTING.md", *(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))} <= links


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    missing = []
    for target in _relative_links(doc):
        path = (doc.parent / target).resolve()
        if os.path.relpath(path, ROOT) not in PENDING and not path.exists():
            missing.append(target)
    assert not missing, f"{doc.relative_to(ROOT)} links to missing files: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_anchors_name_headings(doc):
    bad = []
    for path, anchor in _links(doc):
        target = (doc.parent / path).resolve() if path else doc
        if anchor and target.suffix == ".md" and target.exists() and anchor not in _anchors(target):
            bad.append(f"{path}#{anchor}")
    assert not bad, f"{doc.relative_to(ROOT)} links to headings that do not exist: {bad}"
