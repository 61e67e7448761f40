"""`model.pretrained` from a text run: the fine-tuning run reuses the source's tokenizer, never trains its own.

An embedding row means "the token with this id" only under the tokenizer it was trained with; a new
tokenizer trained on the new data gives every id another meaning (or another vocabulary size, and the
embedding silently stays random). So a source that keeps tokenizer files (a dlforge run directory or model
package of a task with a `Vocabulary`) lends them to the new run, together with the `data.params` settings
that shaped them. A setting this config pins to another value is refused: token ids would change meaning.
Only `max_length` may differ (it cuts texts; ids stay the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dlforge.config import ExperimentConfig, load_config
from dlforge.nn.pretrained import PretrainedError
from dlforge.rundir import CONFIG
from dlforge.taskapi import TASKS, Vocabulary, get_task

FREE = "max_length"  # a tokenizer setting that may differ from the source's: it cuts texts, ids stay the same


@dataclass
class Reuse:
    """What the run does about its tokenizer: the config to train with and the folder to take files from."""

    cfg: ExperimentConfig
    folder: Path | None = None  # tokenizer files reused from here (None: trained on this run's data)
    notes: list[str] = field(default_factory=list)  # for the load report: what was reused
    warnings: list[str] = field(default_factory=list)  # what dlforge could not check


def reuse_vocabulary(cfg: ExperimentConfig, resumed: Path | None = None) -> Reuse:
    """`cfg` with the tokenizer settings of `model.pretrained`'s source, and where its tokenizer files are.

    `resumed`: the run directory of a resumed run, whose own files and settings stand in for the source's
    (the source is not read again). PretrainedError when this config pins a setting the source's
    tokenizer was not made with."""
    pretrained = cfg.model.pretrained
    if pretrained is None or pretrained.source == "timm" or (mine := get_task(cfg.task).vocabulary(cfg)) is None:
        return Reuse(cfg, resumed)
    if resumed is not None and (resumed / CONFIG).is_file():
        run = load_config(resumed / CONFIG)
        return Reuse(_inherit(cfg, run, f"the resumed run {resumed}", "in that run")[0], resumed)
    folder, what = _source_folder(Path(pretrained.source).expanduser())
    theirs = _vocabulary_of(folder)
    if theirs is None:
        return Reuse(cfg, warnings=[
            f"model.pretrained: {what} carries no dlforge tokenizer, so whether its token ids mean what this run's "
            f"do cannot be checked; a new tokenizer is trained on this data ({', '.join(mine.files)}) — the "
            "embedding is only meaningful if the weights were trained with exactly that tokenizer"])
    if theirs.files != mine.files:
        raise PretrainedError(
            f"model.pretrained: {what} keeps {', '.join(theirs.files)}, but this run's task reads "
            f"{', '.join(mine.files)}: its token ids cannot be carried over; start from a run of the same task")
    assert folder is not None
    new_cfg, notes = _inherit(cfg, load_config(folder / CONFIG), what, "in the source")
    return Reuse(new_cfg, folder, [f"tokenizer reused from {what} ({', '.join(mine.files)})", *notes])


def _source_folder(path: Path) -> tuple[Path | None, str]:
    """The folder holding the source's files (a package verified first), or None for a weights file."""
    if path.is_dir() and (path / "manifest.json").is_file():
        from dlforge.export.package import PackageError, load_package

        try:
            load_package(path)  # every sha256, tokenizer files included
        except PackageError as exc:
            raise PretrainedError(f"model.pretrained.source: {exc}") from None
        return path, f"{path} (model package)"
    if path.is_dir():
        return path, str(path)
    return None, f"{path} (a weights file)"


def _vocabulary_of(folder: Path | None) -> Vocabulary | None:
    """The source's tokenizer files and settings: a dlforge run or package (config.yaml) that has them."""
    if folder is None or not (folder / CONFIG).is_file():
        return None
    source = load_config(folder / CONFIG)
    if source.task not in TASKS:
        return None
    vocab = _settings(source, str(folder))
    return vocab if vocab is not None and all((folder / name).is_file() for name in vocab.files) else None


def _settings(source: ExperimentConfig, what: str) -> Vocabulary | None:
    try:
        return get_task(source.task).vocabulary(source)
    except ValidationError as exc:  # a config written by another dlforge version
        raise PretrainedError(f"model.pretrained: {what}: its data.params no longer load here "
                              f"({exc.errors()[0]['msg']}); re-train it with this dlforge") from None


def _inherit(cfg: ExperimentConfig, source: ExperimentConfig, what: str,
             there: str) -> tuple[ExperimentConfig, list[str]]:
    """`cfg` whose data.params take the source's tokenizer settings; pinned conflicts are refused."""
    theirs = _settings(source, what)
    if theirs is None:  # a resumed run of another task: --resume's own check names the difference
        return cfg, []
    params, conflicts, notes = dict(cfg.data.params), [], []
    for key, value in theirs.settings.items():
        pinned, value = params.get(key), _copy(value)
        for name, given, kept in _pins(key, pinned, value):
            if name.endswith("." + FREE) and isinstance(value, dict):
                value[FREE] = given
                notes.append(f"data.params.{name}: {given} here, {kept} {there} (texts are cut at {given})")
            else:
                conflicts.append(f"data.params.{name} is {given!r} here but {kept!r} {there}")
        params[key] = value
    if conflicts:
        raise PretrainedError(
            f"model.pretrained: {what}'s tokenizer is reused so that token ids keep their meaning, but "
            f"{'; '.join(conflicts)} — drop these settings from this config (the source's apply), or train "
            "without model.pretrained")
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"params": params})}), notes


def _pins(key: str, pinned: Any, source_value: Any) -> list[tuple[str, Any, Any]]:
    """(dotted name, this config's value, the source's) of each setting this config gives that differs."""
    if pinned is None:
        return []
    if isinstance(pinned, dict) and isinstance(source_value, dict):
        return [(f"{key}.{name}", given, source_value.get(name)) for name, given in pinned.items()
                if given != source_value.get(name)]
    return [] if pinned == source_value else [(key, pinned, source_value)]


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value
