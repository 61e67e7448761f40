"""`dlforge init DATA`: look at a folder or a table and write a first experiment file that trains as it is.

What the data shows decides the config: a folder of class folders of images or audio clips (sizes and sample
rates read from up to 64 files), of .txt files, or a table (CSV/TSV/JSON lines/Parquet) with a text and a
label column (a classifier) or two sentence columns (a translation pair). The model is one that worked on
data of that size in this project's measurements (docs/*.md), and every choice is commented in the file.
"""

from __future__ import annotations

import csv
import json
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlforge.errors import UserError

SAMPLE = 64  # files opened to read sizes and rates
TABLE_ROWS = 20_000  # rows read to find the columns
LABEL_NAMES = ("label", "labels", "class", "category", "target", "y", "lang", "language", "sentiment", "intent")
SPLITS = ("train", "val", "valid", "validation", "test")
TABLES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet", ".pq")


class InitError(UserError):
    """The data cannot be recognised as any layout dlforge trains on."""


@dataclass
class Found:
    """What the data is, and the facts the config is written from."""

    kind: str  # image | audio | text_folder | text_table | pairs
    path: Path
    facts: dict[str, Any] = field(default_factory=dict)


def _class_root(root: Path) -> Path:
    """The folder holding the class folders (train/ when the data comes in split folders)."""
    return root / "train" if (root / "train").is_dir() else root


def _classes(root: Path) -> list[Path]:
    return sorted(p for p in _class_root(root).iterdir() if p.is_dir() and p.name not in SPLITS)


def inspect_folder(root: Path) -> Found:
    from dlforge.audio_io import AUDIO_SUFFIXES
    from dlforge.data.datasets import IMAGE_SUFFIXES

    classes = _classes(root)
    files = [p for c in classes for p in sorted(c.rglob("*")) if p.is_file()]
    kinds = Counter("image" if p.suffix.lower() in IMAGE_SUFFIXES else "audio" if p.suffix.lower() in
                    (*AUDIO_SUFFIXES, ".mp3") else "text_folder" if p.suffix.lower() == ".txt" else "other"
                    for p in files)
    kinds.pop("other", None)
    if len(classes) < 2 or not kinds:
        raise InitError(f"{root}: expected one folder per class (at least two) holding images, audio clips or "
                        f".txt files{' (under train/)' if (root / 'train').is_dir() else ''}; found "
                        f"{len(classes)} class folder(s) and {sum(kinds.values())} such files")
    kind = kinds.most_common(1)[0][0]
    mine = [p for p in files if _kind_of(p) == kind]
    per_class = Counter(p.relative_to(_class_root(root)).parts[0] for p in mine)
    facts: dict[str, Any] = {"classes": [c.name for c in classes], "files": len(mine),
                             "smallest_class": min(per_class.values(), default=0),
                             "split_folders": (root / "train").is_dir()}
    step = max(1, len(mine) // SAMPLE)
    sample = mine[::step][:SAMPLE]
    if kind == "image":
        facts.update(_image_facts(sample))
    elif kind == "audio":
        facts.update(_audio_facts(sample))
    else:
        facts.update(_text_lengths([p.read_text(errors="replace") for p in sample]))
    return Found(kind, root, facts)


def _kind_of(path: Path) -> str:
    from dlforge.audio_io import AUDIO_SUFFIXES
    from dlforge.data.datasets import IMAGE_SUFFIXES

    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in (*AUDIO_SUFFIXES, ".mp3"):
        return "audio"
    return "text_folder" if suffix == ".txt" else "other"


def _image_facts(sample: list[Path]) -> dict[str, Any]:
    from PIL import Image

    sizes: list[tuple[int, int]] = []
    modes: Counter[str] = Counter()
    for path in sample:
        try:
            with Image.open(path) as image:
                sizes.append(image.size)
                modes[image.mode] += 1
        except OSError:
            continue
    if not sizes:
        raise InitError(f"{sample[0].parent}: none of {len(sample)} images could be opened")
    return {"width": int(statistics.median(w for w, _ in sizes)), "height": int(statistics.median(h for _, h in sizes)),
            "grey": all(mode in ("L", "1", "I", "I;16") for mode in modes)}


def _audio_facts(sample: list[Path]) -> dict[str, Any]:
    import soundfile as sf

    rates: Counter[int] = Counter()
    seconds: list[float] = []
    for path in sample:
        try:
            info = sf.info(str(path))
        except (RuntimeError, sf.LibsndfileError):
            continue
        rates[info.samplerate] += 1
        seconds.append(info.frames / max(info.samplerate, 1))
    if not seconds:
        raise InitError(f"{sample[0].parent}: none of {len(sample)} audio files could be read")
    seconds.sort()
    return {"sample_rate": rates.most_common(1)[0][0], "seconds_p90": seconds[int(0.9 * (len(seconds) - 1))]}


def _text_lengths(texts: list[str]) -> dict[str, Any]:
    lengths = sorted(len(t) for t in texts) or [1]
    words = sorted(len(t.split()) for t in texts) or [1]
    return {"chars_p95": lengths[int(0.95 * (len(lengths) - 1))], "words_p95": words[int(0.95 * (len(words) - 1))]}


def read_table_head(path: Path) -> tuple[list[str], dict[str, list[str]], bool]:
    """(column names, up to TABLE_ROWS values of each as strings, whether the file has a header row)."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path).read_row_group(0)
        return table.column_names, {n: [str(v) for v in table.column(n).to_pylist()[:TABLE_ROWS]]
                                    for n in table.column_names}, True
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        with path.open(encoding="utf-8-sig") as f:
            for line in f:
                if line.strip():
                    rows.append(json.loads(line))
                if len(rows) >= TABLE_ROWS:
                    break
        names = list(dict.fromkeys(k for r in rows for k in r))
        return names, {n: [str(r.get(n, "")) for r in rows] for n in names}, True
    with path.open(encoding="utf-8-sig", newline="") as f:
        head = f.read(64 * 1024)
    delimiter = "\t" if suffix == ".tsv" or head.count("\t") > head.count(",") else ","
    try:
        header = csv.Sniffer().has_header(head)
    except csv.Error:
        header = True
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
        rows = [row for _, row in zip(range(TABLE_ROWS + 1), reader, strict=False) if row]
    names = rows[0] if header else [str(i) for i in range(len(rows[0]))]
    body = rows[1:] if header else rows
    return names, {n: [r[i] if i < len(r) else "" for r in body] for i, n in enumerate(names)}, header


def inspect_table(path: Path) -> Found:
    names, columns, header = read_table_head(path)
    rows = len(next(iter(columns.values()), []))
    if rows < 10:
        raise InitError(f"{path}: {rows} data rows; too few to train on")
    distinct = {n: len(set(v)) for n, v in columns.items()}
    mean_len = {n: statistics.mean(len(x) for x in v) for n, v in columns.items()}
    labelish = [n for n in names if n.lower() in LABEL_NAMES] or \
        [n for n in names if 2 <= distinct[n] <= min(100, rows // 5) and mean_len[n] < 30]
    texts = [n for n in names if n not in labelish and distinct[n] > rows // 2 and mean_len[n] >= 2]
    if labelish and texts:
        text = max(texts, key=lambda n: mean_len[n])
        return Found("text_table", path, {"text_column": text, "label_column": labelish[0], "rows": rows,
                                          "classes": sorted(set(columns[labelish[0]])), "header": header,
                                          **_text_lengths(columns[text])})
    if len(texts) >= 2:
        source, target = texts[0], texts[1]
        return Found("pairs", path, {"source_column": source, "target_column": target, "rows": rows,
                                     "header": header, "source": _text_lengths(columns[source]),
                                     "target": _text_lengths(columns[target])})
    raise InitError(f"{path}: found no text column with a label column (named one of {', '.join(LABEL_NAMES)}, or "
                    f"with few distinct values) nor two sentence columns; columns: {', '.join(names)}")


def inspect(path: Path) -> Found:
    if path.is_dir():
        return inspect_folder(path)
    if path.is_file() and path.suffix.lower() in TABLES:
        return inspect_table(path)
    raise InitError(f"{path}: give a folder of class folders (images, audio clips or .txt files) or a table "
                    f"({', '.join(TABLES)})")


def _name(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem if path.is_file() else path.name) or "experiment"


def _round(value: float, step: int) -> int:
    return max(step, round(value / step) * step)


def render(found: Found) -> str:
    """The experiment YAML for `found`, with a comment on each choice."""
    f, path = found.facts, found.path.resolve()
    head = [f"# Written by `dlforge init {found.path}`: a starting point that trains as it is.",
            "# Train: dlforge run THIS_FILE   (dlforge train, then dlforge export, for the steps)"]
    n, count = len(f.get("classes", [])), f.get("files", f.get("rows"))
    if found.kind == "image":
        side = min(64, _round(max(f["height"], f["width"]), 8))
        channels = 1 if f["grey"] else 3
        body = f"""name: {_name(found.path)}
data:
  dataset: image_folder
  params:
    path: {path}
    image_size: [{side}, {side}]     # median image {f['height']}x{f['width']}; at most 64 keeps CPU training fast
    channels: {channels}                 # {'every sampled image is greyscale' if channels == 1 else 'colour'}
  {_fractions(f)}
model:
  arch: cnn_small                # {n} classes, {count} images: a small CNN first (resnet18 for more data)
  params: {{channels: [32, 64], hidden: 128, dropout: 0.25}}
augment:                         # random draws per batch, training only (dlforge augment-preview shows them)
  - hflip: 0.5                   # drop it if left and right matter (digits, text)
train:
  epochs: 20
  batch_size: {32 if f['files'] < 2000 else 64}
  optimizer: {{name: adamw, lr: 0.002, weight_decay: 0.0001}}
  scheduler: {{name: cosine, warmup_epochs: 1}}
  early_stopping: {{patience: 5}}
"""
    elif found.kind == "audio":
        rate = f["sample_rate"] if f["sample_rate"] in (8000, 16000) else 16000
        seconds = min(10.0, max(0.5, round(f["seconds_p90"] + 0.05, 1)))
        resampled = " are resampled" if rate != f["sample_rate"] else ""
        frontend = f"sample_rate: {rate}, n_fft: {256 if rate == 8000 else 512}, hop: {rate // 80}, n_mels: 32"
        body = f"""name: {_name(found.path)}
data:
  dataset: audio_folder
  params:
    path: {path}
    sample_rate: {rate}            # files at {f['sample_rate']} Hz{resampled}
    duration: {seconds}                # 90 % of sampled clips last at most {f['seconds_p90']:.2f} s: crop/pad
    # group_by: '^(.+?)_'         # a speaker in the file name keeps each speaker in one split
  {_fractions(f)}
model:
  arch: audio_cnn                # log-mel front-end + conv stages ({n} classes, {count} clips)
  params: {{{frontend}, channels: [16, 32, 64]}}
augment:
  - time_shift: 0.1
  - gain: [-6, 6]
train:
  epochs: 30
  batch_size: 32
  optimizer: {{name: adamw, lr: 0.003}}
  scheduler: {{name: cosine, warmup_epochs: 1}}
"""
    elif found.kind in ("text_table", "text_folder"):
        length = min(512, _round(f["chars_p95"] * 2, 16))  # room above the 95th percentile: serving refuses longer
        if found.kind == "text_table":
            lines = path.suffix.lower() in (".jsonl", ".ndjson")
            text_key, label_key = ("text_field", "label_field") if lines else ("text_column", "label_column")
            data = f"""  dataset: {'jsonl' if lines else 'text_csv'}
  params:
    path: {path}
    {text_key}: {f['text_column']}
    {label_key}: {f['label_column']}   # {n} classes"""
        else:
            data = f"""  dataset: text_folder
  params:
    path: {path}"""
        body = f"""name: {_name(found.path)}
data:
{data}
    tokenizer: {{kind: char, lowercase: true, max_length: {length}}}   # 95 % of texts: ≤ {f['chars_p95']} chars
  {_fractions(f)}
model:
  arch: text_ngram               # hashed character n-grams (fastText): the robust choice on small text sets
  params: {{dim: 64, buckets: 65536, min_n: 1, max_n: 5}}
train:
  epochs: 15
  batch_size: 32
  optimizer: {{name: adamw, lr: 0.003, weight_decay: 0.01}}
  scheduler: {{name: cosine, warmup_epochs: 1}}
  monitor: val_f1
"""
    else:
        src_len = min(256, _round(f["source"]["words_p95"] * 2.5, 8))  # BPE tokens: ~2.5 a word at 1,000
        tgt_len = min(256, _round(f["target"]["words_p95"] * 2.5, 8))
        tsv = path.suffix.lower() in (".tsv", ".csv")
        columns = (f"    source_column: {_yaml_key(f['source_column'], f['header'])}\n"
                   f"    target_column: {_yaml_key(f['target_column'], f['header'])}\n"
                   f"    delimiter: \"{chr(9) if path.suffix.lower() == '.tsv' else ','}\"\n" if tsv else
                   f"    source_field: {f['source_column']}\n    target_field: {f['target_column']}\n")
        body = f"""name: {_name(found.path)}
task: seq2seq
data:
  dataset: {'parallel_tsv' if tsv else 'parallel_jsonl'}
  params:
    path: {path}
{columns}    source_tokenizer: {{kind: bpe, vocab_size: 1000, max_length: {src_len}}}
    target_tokenizer: {{kind: bpe, vocab_size: 1000, max_length: {tgt_len}}}
  val_fraction: 0.1
  test_fraction: 0.1
model:
  arch: gru_attention            # {f['rows']} sentence pairs: a GRU encoder-decoder with attention
  params: {{embedding: 64, hidden: 128, dropout: 0.1}}
train:
  epochs: 20
  batch_size: 64
  optimizer: {{name: adamw, lr: 0.003}}
  scheduler: {{name: cosine, warmup_epochs: 1}}
  label_smoothing: 0.1
  grad_clip: 1.0
"""
    return "\n".join(head) + "\n" + body


def _yaml_key(column: str, header: bool) -> str:
    return json.dumps(column) if header else str(int(column))


def _fractions(f: dict[str, Any]) -> str:
    if f.get("split_folders"):
        return "# train/ val/ test/ folders are used as given"
    small = f.get("smallest_class", 100) < 20
    return ("val_fraction: 0.2                # few samples per class: bigger held-out splits\n  test_fraction: 0.2"
            if small else "val_fraction: 0.15\n  test_fraction: 0.15")


def write_config(data: Path, out: Path | None, force: bool = False) -> tuple[Path, Found]:
    """Inspect `data` and write its config to `out` (default `<name>.yaml` here); never overwrites unless `force`."""
    found = inspect(data)
    target = out or Path(f"{_name(data)}.yaml")
    if target.exists() and not force:
        raise InitError(f"{target} exists; choose another --out or pass --force")
    target.write_text(render(found))
    return target, found
