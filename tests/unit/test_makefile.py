"""The Makefile's targets are what the README and the code's comments say they are."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def targets() -> dict[str, str]:
    """Target -> its `## ` help text, for every rule of the Makefile."""
    text = (REPO / "Makefile").read_text()
    return {m[1]: m[2] for m in re.finditer(r"^([a-z0-9-]+):[^=\n]*?(?:## (.*))?$", text, flags=re.M)}


def test_every_phony_target_has_a_rule_with_help_and_every_rule_is_phony() -> None:
    text = (REPO / "Makefile").read_text()
    match = re.search(r"^\.PHONY: (.*)$", text, flags=re.M)
    assert match
    phony = set(match[1].split())
    rules = targets()
    assert phony == set(rules), {"phony without a rule": phony - set(rules), "not phony": set(rules) - phony}
    assert [t for t, help_ in rules.items() if not help_] == [], "every target says what it does (## ...)"


def test_the_readme_lists_every_target() -> None:
    readme = (REPO / "README.md").read_text()
    match = re.search(r"`make help` lists the other targets \(([^)]*)\)", readme)
    assert match, "README.md no longer lists the targets"
    listed = set(re.findall(r"`([a-z0-9-]+)`", match[1]))
    # help is the list itself; demo and test are "the two commands" above it.
    assert listed == set(targets()) - {"help", "demo", "test"}


def test_every_make_target_the_repository_names_exists() -> None:
    files = subprocess.run(
        ["git", "ls-files", "src", "docs", "README.md", "hack", "operator", "charts", "images", "examples"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    named = {
        (path, target)
        for path in files
        if (REPO / path).is_file()
        for target in re.findall(r"[`(]make ([a-z][a-z0-9-]*)\b", (REPO / path).read_text(errors="replace"))
    }
    missing = sorted((path, target) for path, target in named if target not in targets())
    assert missing == []
    assert ("src/ti/api/docs.py", "docs") in named, "the scan sees the docs generator's own mention"
