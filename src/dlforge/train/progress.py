"""A rich progress bar per epoch on the main worker; silent elsewhere."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class EpochProgress:
    """`with EpochProgress(enabled, epochs) as bar: bar.start(epoch, batches); bar.advance(); bar.end(stats)`."""

    def __init__(self, enabled: bool, epochs: int, console: Console | None = None) -> None:
        self.epochs = epochs
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        if enabled:
            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[stats]}"),
                console=self.console, transient=False)
        self.task: Any = None

    def __enter__(self) -> EpochProgress:
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.progress:
            self.progress.stop()

    def start(self, epoch: int, batches: int) -> None:
        if self.progress:
            self.task = self.progress.add_task("train", total=batches, epoch=epoch, epochs=self.epochs, stats="")

    def advance(self) -> None:
        if self.progress:
            self.progress.advance(self.task)

    def end(self, stats: dict[str, float]) -> None:
        if self.progress:
            shown = "  ".join(f"{k} {v:.4g}" for k, v in stats.items())
            self.progress.update(self.task, stats=shown)
