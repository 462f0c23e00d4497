from __future__ import annotations

from pathlib import Path

import pytest

from ti.storage import InvalidURIError, ObjectURI, UnsafeKeyError, parse_uri, safe_relative_path, target_path

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("cos://models-1250000000/a/b", ObjectURI("cos", "models-1250000000", "a/b")),
        ("cos://models-1250000000", ObjectURI("cos", "models-1250000000", "")),
        ("cos://models-1250000000/", ObjectURI("cos", "models-1250000000", "")),
        ("COS://models-1250000000/x/", ObjectURI("cos", "models-1250000000", "x/")),
        ("s3://my-bucket/data", ObjectURI("s3", "my-bucket", "data")),
        ("file:///tmp/x/../y", ObjectURI("file", "", "/tmp/y")),
    ],
)
def test_parse_uri(uri: str, expected: ObjectURI) -> None:
    assert parse_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("models-1250000000/a", "expected cos://"),
        ("http://x/y", "unsupported scheme"),
        ("cos://models/a", "<name>-<appid>"),
        ("cos://Models-1250000000/a", "invalid bucket"),
        ("s3://a/b", "invalid bucket"),
        ("file://relative/path", "absolute path"),
        ("cos://models-1250000000/a\nb", "control characters"),
    ],
)
def test_parse_uri_refuses(uri: str, says: str) -> None:
    with pytest.raises(InvalidURIError, match=says):
        parse_uri(uri)


def test_str_round_trips_and_join() -> None:
    uri = parse_uri("cos://models-1250000000/jobs/")
    assert str(uri.join("a", "/b/", "")) == "cos://models-1250000000/jobs/a/b"
    assert str(parse_uri("cos://models-1250000000").join("x")) == "cos://models-1250000000/x"
    assert uri.as_dir_prefix() == "jobs/"
    assert parse_uri("cos://models-1250000000").as_dir_prefix() == ""
    assert str(parse_uri("file:///tmp/a")) == "file:///tmp/a"


@pytest.mark.parametrize("name", ["a", "a/b/c.txt", "dir/", "x..y", "...", "ünï/cödé"])
def test_safe_relative_path_accepts(name: str) -> None:
    assert str(safe_relative_path(name)) == name.rstrip("/")


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a/..",
        "a//b",
        "./a",
        "a/./b",
        "a\\b",
        "C:/x",
        "a\x00b",
        "a\nb",
        "a\x7f",
    ],
)
def test_safe_relative_path_refuses(name: str) -> None:
    with pytest.raises(UnsafeKeyError):
        safe_relative_path(name)


def test_target_path_refuses_symlinked_parent(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    assert target_path(root, "a/b") == root.resolve() / "a" / "b"
    with pytest.raises(UnsafeKeyError, match="outside"):
        target_path(root, "link/escaped")
