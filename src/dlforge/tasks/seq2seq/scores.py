"""Translation quality: BLEU and chrF from sacrebleu, exact-match rate, and sample translations.

Scores are corpus-level over whole strings, so every worker's hypotheses are gathered before scoring
(sacrebleu's statistics are not averaged per shard).
"""

from __future__ import annotations

from typing import Any

import sacrebleu


def translation_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """BLEU and chrF (0-100, sacrebleu defaults: 13a tokenisation, chrF with n=6 characters) and the
    share of sentences translated exactly (after stripping outer whitespace)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not references:
        return {"bleu": 0.0, "chrf": 0.0, "exact_match": 0.0}
    exact = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references, strict=True))
    return {"bleu": float(sacrebleu.corpus_bleu(hypotheses, [references]).score),
            "chrf": float(sacrebleu.corpus_chrf(hypotheses, [references]).score),
            "exact_match": exact / len(references)}


def sample_translations(sources: list[str], references: list[str], outputs: dict[str, list[str]],
                        limit: int = 20) -> list[dict[str, Any]]:
    """The first `limit` sentences with their reference and each decoder's output (e.g. greedy, beam)."""
    rows = []
    for i, (src, ref) in enumerate(zip(sources[:limit], references[:limit], strict=False)):
        row: dict[str, Any] = {"source": src, "reference": ref}
        for name, hyps in outputs.items():
            row[name] = hyps[i]
            row[f"{name}_correct"] = hyps[i].strip() == ref.strip()
        rows.append(row)
    return rows


def samples_markdown(rows: list[dict[str, Any]], decoders: list[str]) -> str:
    """A Markdown table of sample translations, a ✓/✗ next to each output."""
    head = "| source | reference | " + " | ".join(decoders) + " |\n"
    head += "|---|---|" + "---|" * len(decoders) + "\n"
    esc = lambda s: str(s).replace("|", "\\|")
    lines = [f"| {esc(r['source'])} | {esc(r['reference'])} | " + " | ".join(
        f"{'✓' if r[f'{d}_correct'] else '✗'} {esc(r[d])}" for d in decoders) + " |" for r in rows]
    return head + "\n".join(lines) + "\n"
