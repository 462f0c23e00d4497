"""The /opt/ml layout under a root that local mode moves (contract.ML_ROOT_ENV)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ti import contract


def rebase(path: str, root: str) -> str:
    """`/opt/ml/x` → `<root>/x`; other values unchanged (also inside `:`-separated lists)."""
    if root == contract.ML_ROOT:
        return path
    base = contract.ML_ROOT
    return ":".join(
        root + part[len(base) :] if part == base or part.startswith(base + "/") else part
        for part in path.split(":")
    )


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Layout:
        env = os.environ if env is None else env
        return cls(Path(env.get(contract.ML_ROOT_ENV) or contract.ML_ROOT))

    def path(self, contract_path: str) -> Path:
        """A contract path (`contract.MODEL_DIR`, ...) under this root."""
        return Path(rebase(contract_path, str(self.root)))

    @property
    def code(self) -> Path:
        return self.path(contract.CODE_DIR)

    @property
    def input_config(self) -> Path:
        return self.path(contract.INPUT_CONFIG_DIR)

    @property
    def model(self) -> Path:
        return self.path(contract.MODEL_DIR)

    @property
    def output_data(self) -> Path:
        return self.path(contract.OUTPUT_DATA_DIR)

    @property
    def checkpoints(self) -> Path:
        return self.path(contract.CHECKPOINT_DIR)

    @property
    def ti_dir(self) -> Path:
        return self.path(contract.TI_DIR)

    def channel(self, name: str) -> Path:
        return Path(contract.channel_dir(name, str(self.root)))
