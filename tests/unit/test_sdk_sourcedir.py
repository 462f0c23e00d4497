"""Source packing: what goes into sourcedir.tar.gz, and that the same sources give the same bytes."""

from __future__ import annotations

import os
import tarfile
import time
from pathlib import Path

import pytest

from ti._sdk.sourcedir import members, pack

pytestmark = pytest.mark.unit


def make_tree(root: Path) -> Path:
    src = root / "code"
    for rel in [
        "train.py",
        "pkg/__init__.py",
        "pkg/model.py",
        "pkg/__pycache__/model.cpython-311.pyc",
        "stale.pyc",
        ".git/HEAD",
        ".git/objects/ab/cdef",
        "notebooks/.ipynb_checkpoints/explore-checkpoint.ipynb",
        "notebooks/explore.ipynb",
        "data/.gitkeep",
    ]:
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    return src


def test_pack_skips_vcs_caches_and_checkpoints(tmp_path: Path) -> None:
    archive = pack(make_tree(tmp_path), tmp_path / "out" / "sourcedir.tar.gz")
    assert sorted(members(archive)) == [
        "data/.gitkeep",
        "notebooks/explore.ipynb",
        "pkg/__init__.py",
        "pkg/model.py",
        "run.sh",
        "train.py",
    ]
    with tarfile.open(archive) as tar:
        assert tar.extractfile("pkg/model.py").read() == b"pkg/model.py"  # type: ignore[union-attr]
        assert tar.getmember("run.sh").mode & 0o111
        assert not tar.getmember("train.py").mode & 0o111


def test_pack_is_reproducible(tmp_path: Path) -> None:
    src = make_tree(tmp_path)
    first = pack(src, tmp_path / "a.tar.gz").read_bytes()
    later = time.time() + 100
    os.utime(src / "train.py", (later, later))
    assert pack(src, tmp_path / "b.tar.gz").read_bytes() == first


def test_pack_does_not_follow_symlinked_directories(tmp_path: Path) -> None:
    src = make_tree(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("no")
    (src / "link").symlink_to(outside, target_is_directory=True)
    assert not any(m.startswith("link/") for m in members(pack(src, tmp_path / "s.tar.gz")))
