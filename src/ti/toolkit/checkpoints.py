"""Checkpoint sync: upload what changed in checkpoints/ since the last sync (or the restore)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from ti.storage import ObjectStore, parse_uri
from ti.storage.parallel import run_all

_CONCURRENCY = 4


class CheckpointSync:
    """Mirrors additions and changes of a local directory to a prefix; never deletes remote files.

    A file still being written is uploaded as it is and again once it changes; a file that vanishes
    between listing and upload (a framework's temporary file) is skipped.
    """

    def __init__(
        self, store: ObjectStore, local_dir: Path, uri: str, seen: Mapping[str, tuple[int, int]]
    ) -> None:
        self.store = store
        self.local_dir = local_dir
        self.uri = parse_uri(uri)
        self.seen: dict[str, tuple[int, int]] = dict(seen)
        self.uploaded = 0

    @staticmethod
    def load_seen(path: Path) -> dict[str, tuple[int, int]]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): (int(v[0]), int(v[1])) for k, v in data.items()}

    def changed(self) -> list[tuple[str, Path, tuple[int, int]]]:
        found: list[tuple[str, Path, tuple[int, int]]] = []
        if not self.local_dir.is_dir():
            return found
        for dirpath, dirnames, filenames in os.walk(self.local_dir):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath, name)
                try:
                    if path.is_symlink():
                        continue
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                rel = path.relative_to(self.local_dir).as_posix()
                signature = (stat.st_size, stat.st_mtime_ns)
                if self.seen.get(rel) != signature:
                    found.append((rel, path, signature))
        return found

    def sync(self) -> int:
        """Upload every changed file; return how many were uploaded. Raises StorageError on failure."""
        changes = self.changed()

        def task(rel: str, path: Path, signature: tuple[int, int]) -> Callable[[threading.Event], None]:
            def run(cancel: threading.Event) -> None:
                try:
                    self.store.upload_file(path, str(self.uri.join(rel)))
                except FileNotFoundError:
                    return
                self.seen[rel] = signature

            return run

        run_all([task(*change) for change in changes], _CONCURRENCY)
        self.uploaded += len(changes)
        return len(changes)
