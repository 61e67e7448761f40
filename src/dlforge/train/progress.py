"""Progress on the main worker: a rich bar per epoch on a terminal, one plain line per epoch otherwise
(a log file or CI output gets no bar redraws); silent on the other workers."""

from __future__ import annotations

import time
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
        self.lines = enabled and not self.console.is_terminal
        if enabled and not self.lines:
            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[stats]}"),
                console=self.console, transient=False)
        self.task: Any = None
        self.epoch, self.started = 0, 0.0

    def __enter__(self) -> EpochProgress:
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.progress:
            self.progress.stop()

    def start(self, epoch: int, batches: int) -> None:
        self.epoch, self.started = epoch, time.perf_counter()
        if self.progress:
            self.task = self.progress.add_task("train", total=batches, epoch=epoch, epochs=self.epochs, stats="")

    def advance(self, batches: int = 1) -> None:
        if self.progress:
            self.progress.advance(self.task, batches)

    def end(self, stats: dict[str, float]) -> None:
        shown = "  ".join(f"{k} {v:.4g}" for k, v in stats.items())
        if self.progress:
            self.progress.update(self.task, stats=shown)
        elif self.lines:
            took = time.perf_counter() - self.started
            self.console.print(f"epoch {self.epoch}/{self.epochs}  {shown}  ({took:.1f} s)",
                               markup=False, highlight=False, soft_wrap=True)
