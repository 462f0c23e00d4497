"""Hostile source archives, beyond tests/unit/test_storage_archive.py: names smuggled in PAX and GNU long-name
headers, symlink chains that climb out only when followed, links to links, block devices, set-id bits,
and real decompression bombs (a few KiB that inflate to many MiB, or to a stream of empty members).

Every refusal must leave the whole scratch tree as it was; every accepted archive must leave nothing
that resolves outside the target directory.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from ti.storage import UnsafeArchiveError, extract_tarball

pytestmark = pytest.mark.unit

MiB = 1024 * 1024


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = mode
    return info


def tarball(
    path: Path,
    members: list[tuple[tarfile.TarInfo, bytes | None]],
    fmt: int = tarfile.PAX_FORMAT,
    mode: str = "w:gz",
) -> Path:
    with tarfile.open(path, mode, format=fmt) as tar:  # type: ignore[call-overload]
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def tree(root: Path) -> dict[str, str]:
    """Every path under `root` with what it is (symlinks are not followed)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            found[str(p.relative_to(root))] = (
                f"-> {os.readlink(p)}" if p.is_symlink() else ("dir" if p.is_dir() else str(p.stat().st_size))
            )
    return found


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    # A neighbour the archive would love to reach.
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("keep me")
    return tmp_path


def refused(scratch: Path, archive: Path, says: str, **limits: int) -> None:
    before = tree(scratch)
    dest = scratch / "work" / "code"
    with pytest.raises(UnsafeArchiveError, match=says):
        extract_tarball(archive, dest, **limits)
    assert tree(scratch) == before, "a refused archive changed the file system"


def inside(dest: Path) -> None:
    root = dest.resolve()
    for rel in tree(dest):
        real = (dest / rel).resolve()
        assert real == root or root in real.parents, f"{rel} resolves to {real}, outside {root}"


# ---- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("//etc/evil", "absolute"),
        ("./../evil", r"'\.\.'"),
        ("a/./../../evil", r"'\.\.'|'\.' component"),
        ("a//../../evil", r"'\.\.'|empty"),
        ("..", r"'\.\.'"),
        ("a/../..", r"'\.\.'"),
        ("..\\evil", "absolute"),
        ("C:/evil", "absolute"),
        ("new\nline", "control characters"),
    ],
)
def test_names_that_climb_out_are_refused(scratch: Path, name: str, says: str) -> None:
    archive = tarball(scratch / "a.tgz", [(member("ok.py"), b"ok"), (member(name), b"x")])
    refused(scratch, archive, says)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_names_in_long_name_headers_are_checked_too(scratch: Path, fmt: int) -> None:
    # Over 100 characters, the real name travels in a PAX `path` record or a GNU ././@LongLink member.
    long = "d/" * 60 + "../" * 70 + "outside/secret"
    archive = tarball(scratch / "a.tgz", [(member("ok.py"), b"ok"), (member(long), b"pwned")], fmt=fmt)
    refused(scratch, archive, r"'\.\.'")
    assert (scratch / "outside" / "secret").read_text() == "keep me"


def test_pax_path_record_overrides_a_harmless_ustar_name(scratch: Path) -> None:
    info = member("harmless.py")
    info.pax_headers = {"path": "../../outside/secret"}
    archive = tarball(scratch / "a.tgz", [(info, b"pwned")])
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["../../outside/secret"]  # what an extractor really sees
    refused(scratch, archive, r"'\.\.'")


# ---- links ------------------------------------------------------------------------------------


def test_a_symlink_that_climbs_out_through_another_symlink_is_refused(scratch: Path) -> None:
    # x/up -> .. stays inside (it is the root), and so does `escape -> x/up/..` read lexically; followed,
    # it is the root's parent. Both orders of the two links.
    for order in ((0, 1), (1, 0)):
        links = [
            (member("x/up", tarfile.SYMTYPE, ".."), None),
            (member("escape", tarfile.SYMTYPE, "x/up/../outside"), None),
        ]
        archive = tarball(
            scratch / "a.tgz", [(member("x", tarfile.DIRTYPE, mode=0o755), None), *[links[i] for i in order]]
        )
        refused(scratch, archive, "symlink")


def test_links_that_stay_inside_are_extracted_and_resolve_inside(scratch: Path) -> None:
    archive = tarball(
        scratch / "a.tgz",
        [
            (member("pkg", tarfile.DIRTYPE, mode=0o755), None),
            (member("pkg/util.py"), b"X = 1\n"),
            (member("pkg/alias.py", tarfile.SYMTYPE, "util.py"), None),
            (member("pkg/up", tarfile.SYMTYPE, ".."), None),
            (member("top.py", tarfile.SYMTYPE, "pkg/util.py"), None),
            (member("hard.py", tarfile.LNKTYPE, "pkg/util.py"), None),
        ],
    )
    dest = scratch / "code"
    extract_tarball(archive, dest)
    inside(dest)
    assert (dest / "top.py").read_text() == (dest / "hard.py").read_text() == "X = 1\n"
    assert not (dest / "hard.py").is_symlink()


@pytest.mark.parametrize(
    ("members", "says"),
    [
        ([(member("h", tarfile.LNKTYPE, "/etc/passwd"), None)], "hard link"),
        ([(member("h", tarfile.LNKTYPE, "../../outside/secret"), None)], "hard link"),
        (
            # a hard link to a symlink would copy whatever the symlink points at
            [(member("s", tarfile.SYMTYPE, "ok.py"), None), (member("h", tarfile.LNKTYPE, "s"), None)],
            "hard link",
        ),
        ([(member("s", tarfile.SYMTYPE, "/"), None)], "absolute"),
        ([(member("s", tarfile.SYMTYPE, "ok.py/../../outside"), None)], "outside"),
        ([(member("d", tarfile.SYMTYPE, "."), None), (member("d/d/../../../x"), b"x")], r"'\.\.'"),
        ([(member("blk", tarfile.BLKTYPE), None)], "device"),
        ([(member("chr", tarfile.CHRTYPE), None)], "device"),
    ],
)
def test_links_and_devices_that_escape_are_refused(scratch: Path, members: list, says: str) -> None:
    archive = tarball(scratch / "a.tgz", [(member("ok.py"), b"ok"), *members])
    refused(scratch, archive, says)


def test_set_id_and_sticky_bits_are_dropped(scratch: Path) -> None:
    archive = tarball(scratch / "a.tgz", [(member("run.sh", mode=0o7777), b"#!/bin/sh\n")])
    dest = scratch / "code"
    extract_tarball(archive, dest)
    mode = (dest / "run.sh").stat().st_mode
    assert mode & 0o7000 == 0 and mode & 0o700 == 0o700


# ---- bombs ------------------------------------------------------------------------------------


def test_a_gzip_bomb_is_refused_before_anything_is_written(scratch: Path) -> None:
    # 64 MiB of zeros in one member: under 100 KiB on disk, over the 8 MiB limit once inflated.
    archive = scratch / "bomb.tgz"
    with tarfile.open(archive, "w:gz", compresslevel=9) as tar:
        info = member("weights.bin")
        info.size = 64 * MiB
        tar.addfile(info, io.BytesIO(bytes(64 * MiB)))
    assert archive.stat().st_size < 200 * 1024
    refused(scratch, archive, "limit", max_bytes=8 * MiB)


def test_a_bomb_spread_over_many_members_is_refused(scratch: Path) -> None:
    # Each member is small; together they pass the limit.
    members = [(member(f"part-{i:03d}.bin"), bytes(MiB)) for i in range(20)]
    refused(scratch, tarball(scratch / "a.tgz", members), "limit", max_bytes=8 * MiB)


def test_a_stream_of_empty_members_is_refused(scratch: Path) -> None:
    members = [(member(f"e{i}"), b"") for i in range(5000)]
    refused(scratch, tarball(scratch / "a.tgz", members), "more than 1000 members", max_members=1000)


def test_a_lying_size_field_cannot_smuggle_more_data(scratch: Path) -> None:
    # A header that claims 10 bytes while 4 MiB follow: the rest is read as (garbage) headers, never
    # as the member's content, and the archive is refused or extracts just the 10 bytes.
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(member("ok.py"), io.BytesIO(b""))
    header = member("small.bin")
    header.size = 10
    body = header.tobuf(tarfile.USTAR_FORMAT) + b"A" * (4 * MiB)
    archive = scratch / "liar.tgz"
    archive.write_bytes(gzip.compress(raw.getvalue()[:512] + body + bytes(1024)))
    dest = scratch / "work" / "code"
    try:
        extract_tarball(archive, dest, max_bytes=MiB)
    except (UnsafeArchiveError, tarfile.TarError):
        assert not dest.exists()
        return
    assert (dest / "small.bin").read_bytes() == b"A" * 10
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) <= MiB
    inside(dest)


@pytest.mark.parametrize("mode", ["w:bz2", "w:xz"])
def test_other_compressions_get_the_same_checks(scratch: Path, mode: str) -> None:
    archive = tarball(scratch / "a.tar", [(member("ok.py"), b"ok"), (member("../evil"), b"x")], mode=mode)
    refused(scratch, archive, r"'\.\.'")
