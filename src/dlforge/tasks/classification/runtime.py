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

        from dlforge.export.recipe import load_package_run

        torch.set_num_threads(threads)
        self.net = load_package_run(package)[2]
        self._torch: Any = torch
        self.metadata = package_metadata(package, "pytorch_safetensors")

    def infer(self, batch: Tensors) -> Tensors:
        torch = self._torch
        name = self.metadata.inputs[0].name
        with torch.inference_mode():
            logits = self.net(torch.from_numpy(batch[name]))
            probabilities = torch.softmax(logits, dim=-1)
        return {"logits": logits.numpy(), "probabilities": probabilities.numpy()}
