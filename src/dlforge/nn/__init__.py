"""Model building: the layer registry, named architectures and `build_model`."""

from dlforge.nn import audio, generative_archs, image_layers  # noqa: F401  (register layers and archs)
from dlforge.nn.archs import MODELS, arch_layers
from dlforge.nn.build import ModelBuildError, Net, build_model, count_parameters
from dlforge.nn.layers import LAYERS
from dlforge.nn.ngram import register as _register_ngram_layers
from dlforge.nn.sequence import register as _register_sequence_layers

_register_sequence_layers()
_register_ngram_layers()

__all__ = ["LAYERS", "MODELS", "ModelBuildError", "Net", "arch_layers", "build_model", "count_parameters"]
