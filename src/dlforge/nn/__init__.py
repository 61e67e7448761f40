"""Model building: the layer registry, named architectures and `build_model`."""

from dlforge.nn.archs import MODELS, arch_layers
from dlforge.nn.build import ModelBuildError, Net, build_model, count_parameters
from dlforge.nn.layers import LAYERS
from dlforge.nn import image_layers, generative_archs  # noqa: E402, F401, I001  (register layers and archs)

__all__ = ["LAYERS", "MODELS", "ModelBuildError", "Net", "arch_layers", "build_model", "count_parameters"]
