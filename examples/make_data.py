"""Write the examples' data set: four Gaussian clusters in 16 dimensions, as .npz shards.

    python examples/make_data.py /tmp/ti-data      # → /tmp/ti-data/train/*.npz, /tmp/ti-data/test/*.npz

Upload the two folders as the `train` and `test` channels (coscmd upload -r, or ti.storage).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

FEATURES = 16
CLASSES = 4


def make(rng: np.random.Generator, n: int, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, CLASSES, size=n)
    x = centers[y] + rng.normal(scale=1.0, size=(n, FEATURES))
    return x.astype("float32"), y.astype("int64")


def write(dest: Path, train: int = 2048, test: int = 512, shards: int = 2, seed: int = 7) -> None:
    """Write `shards` train files and one test file under dest/train and dest/test."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=0.6, size=(CLASSES, FEATURES))
    (dest / "train").mkdir(parents=True, exist_ok=True)
    (dest / "test").mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        x, y = make(rng, train // shards, centers)
        np.savez(dest / "train" / f"part-{shard:05d}.npz", x=x, y=y)
    x, y = make(rng, test, centers)
    np.savez(dest / "test" / "part-00000.npz", x=x, y=y)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--train", type=int, default=2048)
    parser.add_argument("--test", type=int, default=512)
    args = parser.parse_args()
    write(args.dest, args.train, args.test)
