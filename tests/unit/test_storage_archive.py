from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from ti.storage import UnsafeArchiveError, extract_tarball, pack_dir

pytestmark = pytest.mark.unit


def tarball(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    return info


def test_pack_and_extract_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "train.py").write_text("print('hi')\n")
    (src / "pkg" / "util.py").write_text("X = 1\n")
    (src / "pkg" / "alias.py").symlink_to("util.py")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    archive = tmp_path / "a.tar.gz"
    pack_dir(src, archive)
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["pkg", "pkg/alias.py", "pkg/util.py", "run.sh", "train.py"]
    dest = tmp_path / "code"
    extract_tarball(archive, dest)
    assert (dest / "pkg" / "util.py").read_text() == "X = 1\n"
    assert (dest / "pkg" / "alias.py").read_text() == "X = 1\n"
    assert (dest / "run.sh").stat().st_mode & 0o111


def test_extracts_dot_slash_archives_and_hard_links(tmp_path: Path) -> None:
    archive = tarball(
        tmp_path / "a.tgz",
        [
            (member("./", tarfile.DIRTYPE), None),
            (member("./a.py"), b"A"),
            (member("./b.py", tarfile.LNKTYPE, "./a.py"), None),
        ],
    )
    extract_tarball(archive, tmp_path / "code")
    assert (tmp_path / "code" / "b.py").read_bytes() == b"A"


@pytest.mark.parametrize(
    ("members", "says"),
    [
        ([(member("../evil.py"), b"x")], r"'\.\.'"),
        ([(member("a/../../evil.py"), b"x")], r"'\.\.'"),
        ([(member("/tmp/evil.py"), b"x")], "absolute"),
        ([(member("link", tarfile.SYMTYPE, "/etc/passwd"), None)], "absolute path"),
        ([(member("link", tarfile.SYMTYPE, "../../outside"), None)], "pointing outside"),
        ([(member("d/link", tarfile.SYMTYPE, "../.."), None)], "pointing outside"),
        ([(member("link", tarfile.SYMTYPE, "."), None), (member("link/../../x"), b"x")], r"'\.\.'"),
        ([(member("dir", tarfile.SYMTYPE, "sub"), None), (member("dir/x"), b"x")], "below a symlink"),
        ([(member("h", tarfile.LNKTYPE, "../outside"), None)], "hard link"),
        ([(member("h", tarfile.LNKTYPE, "later"), None), (member("later"), b"x")], "hard link"),
        ([(member("dev", tarfile.CHRTYPE), None)], "device"),
        ([(member("fifo", tarfile.FIFOTYPE), None)], "device"),
        ([(member("big"), b"x" * 2000)], "limit"),
    ],
)
def test_refuses_unsafe_archives_and_writes_nothing(tmp_path: Path, members: list, says: str) -> None:
    archive = tarball(tmp_path / "a.tar.gz", [(member("ok.py"), b"fine"), *members])
    dest = tmp_path / "work" / "code"
    with pytest.raises(UnsafeArchiveError, match=says):
        extract_tarball(archive, dest, max_bytes=1000)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz"]


def test_refuses_too_many_members(tmp_path: Path) -> None:
    archive = tarball(tmp_path / "a.tar.gz", [(member(f"f{i}"), b"") for i in range(20)])
    with pytest.raises(UnsafeArchiveError, match="more than 10 members"):
        extract_tarball(archive, tmp_path / "code", max_members=10)
