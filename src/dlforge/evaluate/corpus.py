"""Gathering sentence pairs from every worker before corpus-level scoring (BLEU is not a mean of shards).

A torchmetrics `Metric` whose state is the UTF-8 bytes of (hypothesis, reference) pairs: torchmetrics
concatenates list states across ranks on `compute()`, so no torch.distributed code lives here.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

_FIELD, _ROW = "\x1f", "\x1e"  # ASCII unit / record separators: never in tokenizer output


class SentencePairs(Metric):
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("pairs", default=[], dist_reduce_fx="cat")

    def update(self, hypotheses: list[str], references: list[str]) -> None:  # type: ignore[override]
        text = "".join(f"{h}{_FIELD}{r}{_ROW}" for h, r in zip(hypotheses, references, strict=True))
        chunk = torch.frombuffer(bytearray(text.encode()), dtype=torch.uint8).to(self.device)
        self.pairs.append(chunk)  # type: ignore[union-attr,operator]

    def compute(self) -> tuple[list[str], list[str]]:  # type: ignore[override]
        chunks = self.pairs if isinstance(self.pairs, list) else [self.pairs]  # type: ignore[operator]
        text = b"".join(c.cpu().numpy().tobytes() for c in chunks).decode()  # type: ignore[operator]
        rows = [row.split(_FIELD) for row in text.split(_ROW) if row]
        return [h for h, _ in rows], [r for _, r in rows]
