"""Sequence-to-sequence (translation): parallel text → a source and a target tokenizer → an
encoder-decoder trained with teacher forcing → greedy and beam search → BLEU / chrF / exact match.

Export writes two graphs, the encoder and one decoder step with its state; the decoding loop runs in
numpy (dlforge.decoding) for torch and ONNX Runtime alike, and parity means identical output strings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from tokenizers import Tokenizer
from torch import Tensor, nn
from torchmetrics import MeanMetric, SumMetric

from dlforge.config import ConfigError, ExperimentConfig
from dlforge.config.errors import problems_from
from dlforge.data.parallel import PARALLEL
from dlforge.data.splits import DataBundle
from dlforge.decoding import SearchSettings, Special, search
from dlforge.evaluate.corpus import SentencePairs
from dlforge.nn.seq2seq import SEQ2SEQ_MODELS, Seq2SeqModel, Vocab, build_seq2seq, seq2seq_params
from dlforge.nn.seq2seq.engine import TorchEngine
from dlforge.preprocessing import TranslationPreprocessing
from dlforge.registry import RegistryError
from dlforge.taskapi import StepContext, Task, Vocabulary
from dlforge.tasks.seq2seq.data import SOURCE_FILE, TARGET_FILE, load_seq2seq_data
from dlforge.tasks.seq2seq.scores import sample_translations, samples_markdown, translation_scores
from dlforge.text import decode
from dlforge.train.dist import unwrap

if TYPE_CHECKING:
    from dlforge.runinfo import RunInfo

SAMPLES = 20


def special_of(prep: TranslationPreprocessing) -> Special:
    return Special(prep.bos_id, prep.eos_id)


def plain(model: nn.Module) -> Seq2SeqModel:
    """The Seq2SeqModel under DDP / torch.compile wrappers (decoding calls encode/step directly)."""
    net = unwrap(model)
    if not isinstance(net, Seq2SeqModel):
        raise TypeError(f"task seq2seq expects its Seq2SeqModel, got {type(net).__name__}")
    return net


class Seq2SeqTask(Task):
    name = "seq2seq"
    losses = ("loss",)
    metrics = ("token_accuracy", "bleu", "chrf", "exact_match")
    default_monitor = "val_bleu"
    summary = ("bleu", "chrf", "exact_match", "token_accuracy", "beam_bleu", "beam_chrf", "beam_exact_match", "loss")
    own_datasets = True  # data.dataset is checked against PARALLEL in `check`, not against DATASETS

    def __init__(self) -> None:
        # (source, target) tokenizers of loaded bundles by the target's sha256: evaluate gets RunInfo, not the bundle
        self._tokenizers: dict[str, tuple[Tokenizer, Tokenizer]] = {}

    def minimize(self, monitor: str) -> bool:
        return monitor == "val_loss"

    # --- load time ------------------------------------------------------------------------------

    def architectures(self) -> list[str]:
        return SEQ2SEQ_MODELS.names()

    def check(self, cfg: ExperimentConfig) -> list[str]:
        problems: list[str] = []
        try:
            entry = PARALLEL.get(cfg.data.dataset)
            entry.params.model_validate(cfg.data.params)
        except RegistryError as exc:
            problems.append(f"data.dataset: {exc} — seq2seq needs sentence pairs")
        except ValidationError as exc:
            problems += problems_from(exc, entry.params, prefix="data.params")
        if cfg.model.layers is not None or cfg.model.arch is None:
            problems.append("model: seq2seq models are named architectures — e.g. model.arch: gru_attention")
        else:
            try:
                seq2seq_params(cfg.model.arch, cfg.model.params)
            except ConfigError as exc:
                problems += exc.problems
        allowed = ["val_loss", *(f"val_{m}" for m in self.metrics)]
        if cfg.train.monitor is not None and cfg.train.monitor not in allowed:
            problems.append(f"train.monitor: '{cfg.train.monitor}' is not a seq2seq metric "
                            f"(use one of {', '.join(allowed)})")
        if cfg.augment:
            problems.append("augment: not available for seq2seq (it augments image/feature batches); remove it")
        return problems

    # --- data and model -------------------------------------------------------------------------

    def vocabulary(self, cfg: ExperimentConfig) -> Vocabulary | None:
        params = PARALLEL.get(cfg.data.dataset).params.model_validate(cfg.data.params)
        keys = ("source_tokenizer", "target_tokenizer", "shared_tokenizer")
        return Vocabulary((SOURCE_FILE, TARGET_FILE), params.model_dump(mode="json", include=set(keys)))

    def load_data(self, cfg: ExperimentConfig, reuse: Path | None = None) -> DataBundle:
        bundle = load_seq2seq_data(cfg, reuse)
        source, target = bundle.artifacts[SOURCE_FILE], bundle.artifacts[TARGET_FILE]
        digest = TranslationPreprocessing.of(bundle.preprocessing).target_tokenizer_sha256
        self._tokenizers[digest] = (Tokenizer.from_str(source.decode()), Tokenizer.from_str(target.decode()))
        return bundle

    def create_model(self, cfg: ExperimentConfig, bundle: DataBundle) -> nn.Module:
        torch.manual_seed(cfg.seed)  # identical initial weights on every worker
        return build_seq2seq(cfg.model.arch or "", cfg.model.params, Vocab.of(bundle.preprocessing))

    def build_model(self, cfg: ExperimentConfig, info: RunInfo) -> nn.Module:
        return build_seq2seq(cfg.model.arch or "", cfg.model.params, Vocab.of(info.preprocessing))

    # --- training ---------------------------------------------------------------------------------

    def train_step(self, tr: StepContext, batch: Any, optimizer_step: bool) -> dict[str, Tensor]:
        src, tgt = trim(batch)
        with tr.sync_gradients(optimizer_step):
            with tr.autocast():
                logits = tr.model(src, tgt[:, :-1])
                loss = F.cross_entropy(logits.flatten(0, 1).float(), tgt[:, 1:].flatten(), ignore_index=0,
                                       label_smoothing=tr.cfg.train.label_smoothing)
            tr.backward(loss)
        if optimizer_step:
            tr.optimizer_update()
        return {"loss": loss.detach()}

    # --- evaluation -------------------------------------------------------------------------------

    def tokenizers(self, info: RunInfo) -> tuple[Tokenizer, Tokenizer]:
        digest = TranslationPreprocessing.of(info.preprocessing).target_tokenizer_sha256
        if digest not in self._tokenizers:
            raise RuntimeError("seq2seq: evaluate needs the run's tokenizers; load the data with task.load_data first")
        return self._tokenizers[digest]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Any, info: RunInfo, device: torch.device) -> dict[str, Any]:
        """Teacher-forced loss and token accuracy; greedy and beam translations scored with sacrebleu."""
        was_training = model.training
        model.eval()
        prep, (src_tok, tok) = TranslationPreprocessing.of(info.preprocessing), self.tokenizers(info)
        settings = SearchSettings.model_validate(prep.decoding)
        greedy_settings = settings.model_copy(update={"beam_size": 1})
        engine, special = TorchEngine(plain(model), device), special_of(prep)
        loss, correct, total = MeanMetric().to(device), SumMetric().to(device), SumMetric().to(device)
        greedy, beam = SentencePairs().to(device), SentencePairs().to(device)
        shown: dict[str, list[str]] = {"source": [], "reference": [], "greedy": [], "beam": []}  # this worker's
        for batch in batches:
            src, tgt = trim(tuple(t.to(device) for t in batch))
            logits = model(src, tgt[:, :-1]).float()
            gold, mask = tgt[:, 1:], tgt[:, 1:] != 0
            loss.update(F.cross_entropy(logits.flatten(0, 1), gold.flatten(), ignore_index=0, reduction="none")[
                mask.flatten()])
            correct.update(((logits.argmax(-1) == gold) & mask).sum())
            total.update(mask.sum())
            found = {"source": _texts(src_tok, src.tolist()), "reference": _texts(tok, gold.tolist()),
                     "greedy": _texts(tok, search(engine, src.cpu().numpy(), special, greedy_settings))}
            greedy.update(found["greedy"], found["reference"])
            if settings.beam_size > 1:
                found["beam"] = _texts(tok, search(engine, src.cpu().numpy(), special, settings))
                beam.update(found["beam"], found["reference"])
            for key, texts in found.items():
                shown[key] += texts[:SAMPLES - len(shown[key])]
        model.train(was_training)
        hyps, refs = greedy.compute()
        out: dict[str, Any] = {"loss": float(loss.compute()),
                               "token_accuracy": float(correct.compute() / total.compute().clamp_min(1)),
                               **translation_scores(hyps, refs), "sentences": len(refs)}
        if settings.beam_size > 1:
            beam_hyps, beam_refs = beam.compute()
            out |= {f"beam_{k}": v for k, v in translation_scores(beam_hyps, beam_refs).items()}
        out["decoding"] = settings.model_dump()
        decoders = {d: shown[d] for d in ("greedy", "beam") if shown[d]}
        out["samples"] = sample_translations(shown["source"], shown["reference"], decoders, SAMPLES)
        return out

    def write_report(self, run_dir: Path, metrics: dict[str, Any], info: RunInfo, plots: bool) -> None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
        report = run_dir / "report"
        report.mkdir(exist_ok=True)
        decoders = [d for d in ("greedy", "beam") if metrics["samples"] and d in metrics["samples"][0]]
        (report / "samples.md").write_text(samples_markdown(metrics["samples"], decoders))
        history_file = run_dir / "history.jsonl"
        if plots and history_file.is_file():
            from dlforge.evaluate.plots import plot_translation_curves

            history = [json.loads(line) for line in history_file.read_text().splitlines() if line]
            if history:
                plot_translation_curves(history, report / "learning_curves.png")

    # --- export -----------------------------------------------------------------------------------

    def export(self, net: nn.Module, bundle: DataBundle, info: RunInfo, cfg: ExperimentConfig, root: Path,
               tolerance: float, quantize: str | None) -> dict[str, Any]:
        from dlforge.tasks.seq2seq.export import export_package_graphs

        if quantize:
            raise ConfigError(["export.quantize: int8 is not available for seq2seq yet; use none"])
        return export_package_graphs(plain(net), bundle, info, cfg, root, tolerance, self.tokenizers(info)[1])


def trim(batch: Any) -> tuple[Tensor, Tensor]:
    """Drop padding columns every row has (batches are padded to the longest sentence of the split)."""
    src, tgt = batch
    src_len = int((src != 0).sum(1).max().clamp_min(1))
    tgt_len = int((tgt != 0).sum(1).max())
    return src[:, :src_len], tgt[:, :tgt_len]


def _texts(tok: Tokenizer, ids: list[list[int]]) -> list[str]:
    return [decode(tok, row) for row in ids]  # special tokens ([PAD], [BOS], [EOS]) dropped


TASK = Seq2SeqTask()
__all__ = ["TASK", "Seq2SeqTask"]
