"""A classifier's torch engine (`dlforge serve --runtime torch`): the trained network itself, rebuilt from the
package's recipe like evaluate does, answering with the graph's outputs (logits and probabilities)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dlforge.serve.contract import Tensors, package_metadata

if TYPE_CHECKING:
    from dlforge.export.package import ModelPackage


class TorchRuntime:
    """The trained network itself, rebuilt from the package's recipe (config.yaml, run.json, weights) like evaluate."""

    def __init__(self, package: ModelPackage, threads: int) -> None:
        import torch

        from dlforge.config import load_config
        from dlforge.export.errors import PackageError
        from dlforge.rundir import CONFIG, WEIGHTS, rebuild_model
        from dlforge.runinfo import RUN_INFO, RunInfo

        if RUN_INFO not in package.manifest.files:
            raise PackageError(f"{package.root}: no {RUN_INFO} (exported by an older dlforge); re-export the run "
                               "with `dlforge export RUN_DIR` to serve it with the torch runtime")
        torch.set_num_threads(threads)
        cfg = load_config(package.path(CONFIG))
        self.net = rebuild_model(cfg, RunInfo.read(package.path(RUN_INFO)), package.path(WEIGHTS))
        self._torch: Any = torch
        self.metadata = package_metadata(package, "pytorch_safetensors")

    def infer(self, batch: Tensors) -> Tensors:
        torch = self._torch
        name = self.metadata.inputs[0].name
        with torch.inference_mode():
            logits = self.net(torch.from_numpy(batch[name]))
            probabilities = torch.softmax(logits, dim=-1)
        return {"logits": logits.numpy(), "probabilities": probabilities.numpy()}
