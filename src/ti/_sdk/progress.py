"""Progress bars for uploads and downloads (rich), fed by the storage layer's progress callbacks."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn


@contextmanager
def transfer_bar(description: str, total: int) -> Iterator[Callable[[Any], None]]:
    """A bar of `total` bytes; the callback takes a `ti.storage.Progress` (cumulative bytes)."""
    console = Console(file=sys.stderr)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=not console.is_terminal) as bar:
        task = bar.add_task(description, total=max(total, 1))

        def update(progress: Any) -> None:
            bar.update(task, completed=getattr(progress, "transferred_bytes", 0))

        yield update
        bar.update(task, completed=max(total, 1))
    if not console.is_terminal:
        console.print(f"{description}: {total} bytes", highlight=False, soft_wrap=True)
