"""The CLI and the serving path import no torch (item 8 of #18): `dlforge --help` starts in a blink."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return set(out.split())


def test_cli_help_imports_no_torch() -> None:
    loaded = modules_after("import sys\nfrom dlforge.cli import main\nsys.argv = ['dlforge', '--help']\n"
                           "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code")
    assert "dlforge.cli" in loaded and "torch" not in loaded
    assert not {"numpy", "pydantic", "dlforge.config"} & loaded  # each command imports what it uses, when it runs


def test_loading_a_package_in_the_onnx_runtime_imports_no_torch(model_package: Path) -> None:
    loaded = modules_after(f"from dlforge.export.package import load_package\n"
                           f"from dlforge.serve.app import create_app\n"
                           f"from dlforge.serve.runtime import load_runtime\n"
                           f"load_runtime('onnx', load_package({str(model_package)!r}), 1)")
    assert "onnxruntime" in loaded and "torch" not in loaded
