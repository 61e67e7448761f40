"""Loading trained weights into a freshly built model: name matching, head replacement, input-conv adaptation.

The source is a plain state dict here (dlforge.weights reads it from runs, packages and files). What
could not be loaded is never silent: every key lands in one list of the `LoadReport`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from dlforge.config.finetune import PretrainedConfig
from dlforge.errors import UserError

KEPT_PREFIX = "normalize."  # input statistics belong to this run's data, never to the source


class PretrainedError(UserError, ValueError):
    """Weights that cannot be used as a starting point; the message says what matched and the fix."""


@dataclass
class LoadReport:
    """What happened to every tensor: loaded, re-initialised (and why) or left out."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # model keys the source lacks (kept as initialised)
    unexpected: list[str] = field(default_factory=list)  # source keys the model lacks (ignored)
    mismatched: list[tuple[str, list[int], list[int]]] = field(default_factory=list)  # key, source, model shape
    head: list[str] = field(default_factory=list)  # classifier keys re-initialised
    head_reason: str = ""
    adapted: list[tuple[str, list[int], list[int]]] = field(default_factory=list)  # first conv: source → model
    kept: list[str] = field(default_factory=list)  # this run's own input normalisation
    aligned: str = ""  # how source names were lined up with the model's, when not as given
    notes: list[str] = field(default_factory=list)  # e.g. the source's tokenizer reused (dlforge.vocabulary)
    warnings: list[str] = field(default_factory=list)  # what could not be checked: printed loudly

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """A short human summary (the full lists are in pretrained.json)."""
        total = len(self.loaded) + len(self.missing) + len(self.mismatched) + len(self.head) + len(self.adapted)
        out = [f"pretrained: loaded {len(self.loaded)} of {total} tensors from {self.source}"
               + (f" ({self.aligned})" if self.aligned else "")]
        if self.head:
            out.append(f"  head replaced (re-initialised): {', '.join(self.head)} — {self.head_reason}")
        out += [f"  input conv adapted: {k} {src} → {dst}" for k, src, dst in self.adapted]
        out += [f"  shape mismatch, kept initialised: {k} {src} vs model {dst}" for k, src, dst in self.mismatched]
        if self.missing:
            out.append(f"  missing in source ({len(self.missing)}): {_few(self.missing)}")
        if self.unexpected:
            out.append(f"  not in model, ignored ({len(self.unexpected)}): {_few(self.unexpected)}")
        out += [f"  {note}" for note in self.notes]
        return out + [f"warning: {warning}" for warning in self.warnings]


def _few(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f", … (+{len(keys) - n})" if len(keys) > n else "")


def classifier_name(net: nn.Module, num_classes: int) -> str | None:
    """The module that maps features to class scores: timm's `get_classifier()`, else the last
    Linear (or 1x1-conv) whose output size is `num_classes`."""
    for name, module in net.named_modules():
        getter = getattr(module, "get_classifier", None)
        if callable(getter) and isinstance(getter(), nn.Module):
            head = getter()
            for sub_name, sub in module.named_modules():
                if sub is head:
                    return f"{name}.{sub_name}" if name else sub_name
    for name, module in reversed(list(net.named_modules())):
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.Linear | nn.Conv2d | nn.Conv1d) and isinstance(weight, Tensor) \
                and weight.shape[0] == num_classes:
            return name
    return None


def rename_keys(state: dict[str, Tensor], cfg: PretrainedConfig) -> dict[str, Tensor]:
    """Apply `strip_prefix` then `rename` (regex → replacement, in order) to every source key."""
    out = {}
    for key, value in state.items():
        for prefix in cfg.strip_prefix:
            if key.startswith(prefix):
                key = key[len(prefix):]
        for pattern, repl in cfg.rename.items():
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def _renamers() -> list[tuple[str, Callable[[str], str]]]:
    """Name fixes tried by `align_names`, as (what it did, how)."""
    out: list[tuple[str, Callable[[str], str]]] = [("", lambda k: k), ("added prefix 'body.'", lambda k: "body." + k)]
    for prefix in ("module.", "model.", "body."):
        out.append((f"stripped prefix '{prefix}'", partial(_strip, prefix=prefix, to="")))
        out.append((f"replaced prefix '{prefix}' by 'body.'", partial(_strip, prefix=prefix, to="body.")))
    return out


def _strip(key: str, prefix: str, to: str) -> str:
    return to + key.removeprefix(prefix) if key.startswith(prefix) else key


def align_names(state: dict[str, Tensor], model_keys: set[str]) -> tuple[dict[str, Tensor], str]:
    """Line source names up with the model's when one side carries a prefix the other lacks (`body.`,
    DDP's `module.`): the candidate that matches the most keys wins, the names as given on a tie."""
    hits = [(sum(fn(k) in model_keys for k in state), -i) for i, (_, fn) in enumerate(_renamers())]
    how, fn = _renamers()[-max(hits)[1]]
    return {fn(k): v for k, v in state.items()}, how


def adapt_input_conv(weight: Tensor, in_channels: int) -> Tensor:
    """A first-conv kernel for another number of input channels (as timm's adapt_input_conv): summed for
    one channel, otherwise repeated cyclically and rescaled so the response to a grey image is unchanged."""
    source_channels = weight.shape[1]
    w = weight.float()
    if in_channels == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        repeats = -(-in_channels // source_channels)
        w = w.repeat(1, repeats, *([1] * (w.dim() - 2)))[:, :in_channels] * (source_channels / in_channels)
    return w.to(weight.dtype)


def _first_conv(model_state: dict[str, Tensor]) -> str | None:
    return next((k for k, v in model_state.items()
                 if k.endswith("weight") and v.dim() in (3, 4, 5) and not k.startswith(KEPT_PREFIX)), None)


def _head_reason(cfg: PretrainedConfig, shapes_differ: bool, source_labels: list[str] | None,
                 labels: list[str] | None) -> str:
    """Why the classifier is re-initialised, or '' to load it."""
    if cfg.head == "reset":
        return "model.pretrained.head is 'reset'"
    if shapes_differ:
        return "the number of classes differs"
    if cfg.head == "auto" and source_labels is not None and labels is not None and source_labels != labels:
        return f"the labels differ (source {_few(source_labels, 5)}; this data {_few(labels, 5)})"
    return ""


def plan_load(net: nn.Module, source: dict[str, Tensor], cfg: PretrainedConfig, num_classes: int | None,
              source_labels: list[str] | None = None, labels: list[str] | None = None,
              name: str = "") -> tuple[dict[str, Tensor], LoadReport]:
    """The model's new state dict (its own tensors where nothing loads) and the report of every key.

    `num_classes`: None for models without a classifier (denoisers, generators): nothing is a head."""
    target = net.state_dict()
    state, aligned = align_names(rename_keys(source, cfg), set(target))
    report = LoadReport(source=name or cfg.source, aligned=aligned)
    head = classifier_name(net, num_classes) if num_classes is not None else None
    head_keys = [k for k in target if head is not None and k.startswith(head + ".")]
    shapes_differ = any(k in state and state[k].shape != target[k].shape for k in head_keys)
    report.head_reason = _head_reason(cfg, shapes_differ, source_labels, labels) if head_keys else ""
    loads_head = any(k in state for k in head_keys) and not report.head_reason
    if loads_head and cfg.head == "auto" and source_labels is None and labels:
        report.warnings.append(
            f"model.pretrained.head: auto loads the classifier {head} because its shape fits, but {report.source} "
            f"names no labels, so whether its classes are this data's ({_few(labels, 5)}) cannot be checked — "
            "set head: reset if they differ, head: keep if they are the same")
    first_conv = _first_conv(target) if cfg.adapt_input else None
    new = dict(target)
    for key, mine in target.items():
        theirs = state.get(key)
        if key.startswith(KEPT_PREFIX):
            report.kept.append(key)
        elif key in head_keys and report.head_reason:
            report.head.append(key)
        elif theirs is None:
            report.missing.append(key)
        elif theirs.shape == mine.shape:
            new[key] = theirs.to(mine.dtype)
            report.loaded.append(key)
        elif key == first_conv and theirs.dim() == mine.dim() and theirs.shape[0] == mine.shape[0] \
                and theirs.shape[2:] == mine.shape[2:]:
            new[key] = adapt_input_conv(theirs, mine.shape[1]).to(mine.dtype)
            report.adapted.append((key, list(theirs.shape), list(mine.shape)))
        else:
            report.mismatched.append((key, list(theirs.shape), list(mine.shape)))
    report.unexpected = [k for k in state if k not in target and not k.startswith(KEPT_PREFIX)]
    check_report(report, cfg, len(state), sorted(target)[:3], sorted(state)[:3])
    return new, report


def check_report(report: LoadReport, cfg: PretrainedConfig, n_source: int, model_keys: list[str],
                 source_keys: list[str]) -> None:
    """Refuse a source that matches nothing, and (strict) anything but a clean load plus a replaced head."""
    if not report.loaded and not report.adapted:
        raise PretrainedError(
            f"model.pretrained: {report.source}: 0 of its {n_source} tensors match this model's names and shapes "
            f"(source keys look like {', '.join(source_keys)}; the model's like {', '.join(model_keys)}) — "
            "is it the same architecture? Map names with model.pretrained.strip_prefix / rename")
    if cfg.strict and (report.missing or report.unexpected or report.mismatched):
        raise PretrainedError(
            f"model.pretrained: strict load of {report.source} failed: {len(report.missing)} missing "
            f"({_few(report.missing, 3)}), {len(report.unexpected)} unexpected ({_few(report.unexpected, 3)}), "
            f"{len(report.mismatched)} shape-mismatched ({_few([k for k, *_ in report.mismatched], 3)}); "
            "set model.pretrained.strict: false to load what matches")


def load_pretrained(net: nn.Module, source: dict[str, Tensor], cfg: PretrainedConfig, num_classes: int | None,
                    source_labels: list[str] | None = None, labels: list[str] | None = None,
                    name: str = "") -> LoadReport:
    """Load `source` into `net` in place (see `plan_load`); the head, when replaced, keeps its fresh init."""
    new, report = plan_load(net, source, cfg, num_classes, source_labels, labels, name)
    with torch.no_grad():
        net.load_state_dict(new)
    return report
