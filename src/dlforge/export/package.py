"""The model package: what export writes and what serve loads, verified file by file.

```
package/
  manifest.json      name, version, signature (V2 tensor specs), labels, preprocessing, sha256 of every file
  model.onnx         the graph (logits + softmax probabilities), dynamic batch axis
  model.safetensors  the torch weights (never pickles)
  config.yaml        the resolved experiment config
  run.json           data facts (input shape, labels, token or float inputs): with config.yaml and the
                     weights, the recipe `rundir.rebuild_model` needs
  model.int8.onnx    only when quantized
  tokenizer.json …   the run's artifacts (whatever must match between training and serving)
```
A task with several graphs (e.g. an encoder and a decoder step) lists them in `graphs`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dlforge.export.errors import ExportError, PackageError
from dlforge.preprocessing import Preprocessing, describe_error

__all__ = ["ExportError", "FileEntry", "Manifest", "ModelPackage", "PackageError", "TensorSpec",
           "export_run", "load_package"]

MANIFEST, ONNX_FILE, INT8_FILE = "manifest.json", "model.onnx", "model.int8.onnx"
FORMAT_VERSION: Literal[1] = 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorSpec(Strict):
    """A V2 tensor spec: datatype is a V2 name (FP32, INT64, …), -1 marks a dynamic dim."""

    name: str
    datatype: str
    shape: list[int]


class FileEntry(Strict):
    sha256: str
    bytes: int


class OnnxInfo(Strict):
    opset: int
    parity_max_abs_diff: float
    tolerance: float
    parity_samples: int


class QuantizedInfo(Strict):
    file: str
    accuracy: float
    fp32_accuracy: float
    latency_ms_batch1: float
    fp32_latency_ms_batch1: float
    method: str


class ServingInfo(Strict):
    """Batcher settings for this model; None lets the server size them from the model's measured latency."""

    max_batch_size: int | None = Field(None, ge=1)
    max_queue_delay_ms: float | None = Field(None, ge=0)
    max_batch_rows: int | None = Field(None, ge=1)


class Manifest(Strict):
    """manifest.json; its JSON Schema is checked in as export/manifest.schema.json."""

    format_version: Literal[1]
    name: str
    version: str
    task: str
    created: str
    dlforge_version: str
    torch_version: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[str] = Field(default_factory=list, description="class names (classification)")
    preprocessing: Preprocessing
    files: dict[str, FileEntry]
    onnx: OnnxInfo
    graphs: list[str] = Field(default_factory=lambda: [ONNX_FILE], description="the ONNX files the task runs")
    quantized: QuantizedInfo | None = None
    metrics: dict[str, Any]
    serving: ServingInfo = ServingInfo()
    task_info: dict[str, Any] = Field(default_factory=dict, description="task-specific facts (decoding, …)")


@dataclass
class ModelPackage:
    """A loaded package whose files all matched their manifest hashes."""

    root: Path
    manifest: Manifest

    def path(self, name: str) -> Path:
        """A file of the package (only listed, hence verified, files)."""
        if name not in self.manifest.files:
            raise PackageError(f"{self.root}: {name} is not a file of this package "
                               f"(it has {', '.join(sorted(self.manifest.files))})")
        return self.root / name

    @property
    def onnx_path(self) -> Path:
        return self.path(ONNX_FILE)

    @property
    def int8_path(self) -> Path | None:
        q = self.manifest.quantized
        return self.path(q.file) if q else None


def file_entry(path: Path) -> FileEntry:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return FileEntry(sha256=digest.hexdigest(), bytes=path.stat().st_size)


def _read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST
    if path.is_symlink():
        raise PackageError(f"{path}: is a symbolic link; package files must be regular files in the package")
    if not path.is_file():
        raise PackageError(f"{root}: no {MANIFEST} — not a model package (export one: dlforge export RUN_DIR)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PackageError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format_version") != FORMAT_VERSION:
        found = raw.get("format_version") if isinstance(raw, dict) else None
        raise PackageError(f"{path}: format_version {found!r} is not supported (this dlforge reads "
                           f"{FORMAT_VERSION}); re-export with this version or upgrade dlforge")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["loc"][:1] == ("preprocessing",):  # the message names the kind and the key's meaning
            raise PackageError(f"{path}: {describe_error(first, start=1)}") from None
        where = ".".join(str(p) for p in first["loc"])
        raise PackageError(f"{path}: field {where}: {first['msg']} ({exc.error_count()} problem(s))") from None


def _verify_files(root: Path, manifest: Manifest) -> None:
    listed = manifest.files
    for name, entry in listed.items():
        if Path(name).name != name or name in (".", "..", MANIFEST):
            raise PackageError(f"{root / MANIFEST}: files: {name!r} must be a plain file name in the package")
        path = root / name
        if path.is_symlink():  # a link could make a verified-looking package read any file on the machine
            raise PackageError(f"{path}: is a symbolic link; package files must be regular files in the package")
        if not path.is_file():
            raise PackageError(f"{path}: missing (listed in {MANIFEST}); the package is incomplete")
        actual = file_entry(path)
        if actual != entry:
            raise PackageError(f"{path}: sha256/size mismatch with {MANIFEST} (expected {entry.sha256[:12]}…, "
                               f"{entry.bytes} bytes; found {actual.sha256[:12]}…, {actual.bytes} bytes) — "
                               "the file was modified or corrupted; re-export the package")
    extra = sorted(p.name for p in root.iterdir() if p.name != MANIFEST and p.name not in listed)
    if extra:
        raise PackageError(f"{root / extra[0]}: not listed in {MANIFEST} (unlisted: {', '.join(extra)}); "
                           "remove it or re-export the package")
    needed = [*manifest.graphs] + ([manifest.quantized.file] if manifest.quantized else [])
    for name in needed:
        if name not in listed:
            raise PackageError(f"{root / MANIFEST}: files: {name} is required but not listed")


def load_package(path: str | Path) -> ModelPackage:
    """Load and verify a package: schema, format version, and the sha256 of every file (nothing unpickled)."""
    root = Path(path)
    if not root.is_dir():
        raise PackageError(f"{root}: not a folder (a model package is a folder with {MANIFEST})")
    manifest = _read_manifest(root)
    _verify_files(root, manifest)
    return ModelPackage(root, manifest)


def write_manifest(root: Path, **fields: Any) -> Manifest:
    """Hash every file in `root` and write manifest.json (validated before it is written)."""
    files = {p.name: file_entry(p) for p in sorted(root.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = Manifest(format_version=FORMAT_VERSION, files=files,
                        created=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"), **fields)
    (root / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def _replace_dir(tmp: Path, out: Path) -> None:
    """Swap the finished temp dir into place, so readers never see a half-written package."""
    old = out.with_name(f".{out.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)


def export_run(run_dir: Path, quantize: str | None = None, out: Path | None = None,
               tolerance: float | None = None) -> Path:
    """Export a finished run to `out` (default run_dir/package), atomically; returns the package folder.

    `quantize` ("int8" or None/"none") overrides the run config's export.quantize; `tolerance` its
    export.tolerance. Raises ExportError when ONNX Runtime disagrees with torch.
    """
    from dlforge.export.build import build_package

    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "package"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        fields = build_package(run_dir, tmp, quantize, tolerance)
        write_manifest(tmp, **fields)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def schema_json() -> str:
    """The manifest JSON Schema text, as checked in next to this module."""
    return json.dumps(Manifest.model_json_schema(), indent=2) + "\n"
