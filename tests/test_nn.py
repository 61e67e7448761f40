import pytest
import torch

from dlforge.config import ConfigError, ModelConfig
from dlforge.nn import LAYERS, MODELS, ModelBuildError, build_model
from dlforge.nn.generative_archs import ARCH_TASKS


@pytest.mark.parametrize("arch", [name for name in MODELS.names() if name.endswith("_tiny") and name not in ARCH_TASKS])
def test_every_tiny_preset_builds_and_runs(arch: str) -> None:
    if arch == "rnn_tiny":
        net = build_model(ModelConfig(arch=arch), (12, 5), 3)
        x = torch.rand(4, 12, 5)
    elif arch.startswith("text_"):  # token ids padded with 0; the vocabulary comes from the tokenizer
        net = build_model(ModelConfig(arch=arch), (12,), 3, integer_input=True, pad_id=0, vocab_size=20)
        x = torch.randint(1, 20, (4, 12))
    elif arch.startswith("audio_"):
        net = build_model(ModelConfig(arch=arch), (4000,), 3)  # raw waveforms
        x = torch.randn(4, 4000) * 0.1
    else:
        net = build_model(ModelConfig(arch=arch), (3, 16, 16), 3)
        x = torch.rand(4, 3, 16, 16)
    out = net(x)
    assert out.shape == (4, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_resnet18_has_the_reference_parameter_count() -> None:
    # torchvision's resnet18 has 11,689,512 params with a 1000-way head; ours, 10 classes and a 3x3
    # stem: 11,173,962 (the CIFAR-style ResNet-18 count everyone quotes).
    net = build_model(ModelConfig(arch="resnet18"), (3, 32, 32), 10)
    assert sum(p.numel() for p in net.body.parameters()) == 11_173_962


def test_short_forms_and_inferred_sizes() -> None:
    net = build_model(ModelConfig(layers=[{"conv2d": 8}, "relu", {"maxpool2d": 2}, "flatten", {"dense": 10}]),
                      (1, 8, 8), 10)
    conv, _, _, _, dense = net.body
    assert conv.in_channels == 1 and conv.out_channels == 8
    assert dense.in_features == 8 * 4 * 4


def test_every_registered_layer_builds_somewhere() -> None:
    inputs = {(3, 8, 8): ["conv2d", "maxpool2d", "avgpool2d", "adaptive_avgpool2d", "batchnorm2d"],
              (6, 5): ["conv1d", "batchnorm1d", "layernorm", "lstm", "gru", "dense", "linear", "pool", "positional",
                       "transformer_encoder", "step_conv"],
              (7,): ["dropout", "flatten", "relu", "gelu", "sigmoid", "tanh", "silu", "elu", "leaky_relu", "softmax"],
              (1600,): ["melspectrogram", "mfcc"]}
    params = {"conv2d": {"channels": 2}, "conv1d": {"channels": 2}, "lstm": {"hidden": 3}, "gru": {"hidden": 3},
              "dense": {"units": 3}, "linear": {"units": 3}, "transformer_encoder": {"heads": 1},
              "step_conv": {"channels": 2}}
    covered = {"embedding", "residual", "conv_transpose2d", "upsample", "reshape", "concat_skip",  # test_generative
               "ngram_bag"}  # test_ngram
    for shape, names in inputs.items():
        for name in names:
            spec = {name: params[name]} if name in params else name
            layers = [spec, "flatten", {"dense": 2}]
            assert build_model(ModelConfig(layers=layers), shape, 2)(torch.rand(2, *shape)).shape == (2, 2)
            covered.add(name)
    assert covered == {name for name in LAYERS.names() if LAYERS.origin(name) == "dlforge"}  # plugins: their tests


def test_embedding_then_lstm_on_tokens() -> None:
    layers = [{"embedding": {"vocab_size": 20, "dim": 4}}, {"lstm": {"hidden": 6, "bidirectional": True}},
              {"dense": 3}]
    net = build_model(ModelConfig(layers=layers), (9,), 3, integer_input=True)
    assert net(torch.randint(0, 20, (2, 9))).shape == (2, 3)


def test_residual_adds_projection_when_shapes_differ() -> None:
    block = {"residual": {"layers": [{"conv2d": {"channels": 8, "stride": 2}}], "activation": "relu"}}
    net = build_model(ModelConfig(layers=[block, "flatten", {"dense": 2}]), (4, 8, 8), 2)
    residual = net.body[0]
    assert isinstance(residual.proj, torch.nn.Conv2d) and residual.proj.stride == (2, 2)
    assert net(torch.rand(2, 4, 8, 8)).shape == (2, 2)


def test_dense_after_conv_without_flatten_names_layer_and_shapes() -> None:
    with pytest.raises(ModelBuildError, match=r"model.layers\[2\] \(dense\): input shape \(8, 8, 8\).*flatten"):
        build_model(ModelConfig(layers=[{"conv2d": 8}, "relu", {"dense": 10}]), (1, 8, 8), 10)


def test_kernel_larger_than_input_names_layer() -> None:
    conv = {"conv2d": {"channels": 4, "kernel": 5, "padding": "valid"}}
    with pytest.raises(ModelBuildError, match=r"model.layers\[1\] \(conv2d\): input shape \(4, 4, 4\).*Kernel size"):
        build_model(ModelConfig(layers=[conv, conv, "flatten", {"dense": 2}]), (1, 8, 8), 2)


def test_nested_errors_carry_nested_path() -> None:
    block = {"residual": {"layers": ["relu", {"dense": 4}]}}
    with pytest.raises(ModelBuildError, match=r"model.layers\[0\].layers\[1\] \(dense\)"):
        build_model(ModelConfig(layers=[block]), (3, 4, 4), 2)


def test_wrong_number_of_outputs_suggests_head() -> None:
    with pytest.raises(ModelBuildError, match="end the layers with `- dense: 10`"):
        build_model(ModelConfig(layers=["flatten", {"dense": 4}]), (1, 8, 8), 10)


def test_unknown_layer_and_bad_short_value() -> None:
    with pytest.raises(ConfigError, match="did you mean 'conv2d'"):
        build_model(ModelConfig(layers=[{"conv2": 8}]), (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="'flatten' takes no short value"):
        build_model(ModelConfig(layers=[{"flatten": 3}]), (1, 8, 8), 10)
