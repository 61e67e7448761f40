"""Model building: the layer registry, named architectures and `build_model`."""

from dlforge.nn import audio as _audio  # noqa: F401  (registers the melspectrogram and mfcc layers)
from dlforge.nn.archs import MODELS, arch_layers
from dlforge.nn.build import ModelBuildError, Net, build_model, count_parameters
from dlforge.nn.layers import LAYERS

__all__ = ["LAYERS", "MODELS", "ModelBuildError", "Net", "arch_layers", "build_model", "count_parameters"]
