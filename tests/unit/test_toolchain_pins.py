"""The README shows the pinned toolchain versions; they must be the ones hack/toolchain.sh installs."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_readme_shows_every_pinned_version() -> None:
    readme = (REPO / "README.md").read_text()
    pins = {}
    for line in (REPO / "hack" / "versions.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            pins[key] = value
    assert pins, "hack/versions.env pins nothing"
    for key, value in pins.items():
        assert value in readme, f"README.md does not show {key}={value} from hack/versions.env"
