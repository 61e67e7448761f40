"""The experiment file, section by section, as pydantic models (the single source of validation).

Component lists (model layers, augmentations) are kept as plain `{type, value, params}` specs here;
the registry that owns each type validates its parameters (see `dlforge.experiment`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dlforge.config.finetune import Freeze, ParamGroupConfig, PretrainedConfig, check_finetune


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ComponentSpec(Strict):
    """One entry of a component list. YAML short forms are accepted:
    `- relu`, `- dense: 10` (value), `- conv2d: {channels: 32, kernel: 3}` (params),
    `- {type: conv2d, channels: 32}`."""

    type: str
    value: Any = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            return {"type": raw}
        if isinstance(raw, dict) and "type" not in raw and len(raw) == 1:
            ((name, body),) = raw.items()
            if isinstance(body, dict):
                return {"type": name, "params": body}
            return {"type": name, "value": body}
        if isinstance(raw, dict) and "type" in raw and set(raw) - {"type", "value", "params"}:
            params = {k: v for k, v in raw.items() if k not in {"type", "value", "params"}}
            return {"type": raw["type"], "value": raw.get("value"), "params": {**raw.get("params", {}), **params}}
        return raw


class DataConfig(Strict):
    dataset: str = Field("digits", description="digits | image_folder | synthetic")
    params: dict[str, Any] = Field(default_factory=dict, description="dataset-specific settings")
    val_fraction: float = Field(0.15, gt=0, lt=1)
    test_fraction: float = Field(0.15, gt=0, lt=1)
    classes: list[str] | None = Field(None, min_length=2, description="keep only these labels (in this order)")
    train_fraction: float = Field(1.0, gt=0, le=1, description="seeded stratified share of the train split to use")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must stay below 0.9 to leave data to train on")
        return self


class ModelConfig(Strict):
    arch: str | None = Field(None, description="a registered architecture (see `dlforge models`)")
    params: dict[str, Any] = Field(default_factory=dict, description="settings of `arch`")
    layers: list[ComponentSpec] | None = Field(None, description="a layer list (see `dlforge layers`)")
    pretrained: PretrainedConfig | None = Field(None, description="start from these weights (see docs/finetuning.md)")

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.arch is None) == (self.layers is None):
            raise ValueError("give exactly one of model.arch (e.g. 'cnn_small') or model.layers")
        if self.layers is not None and self.params:
            raise ValueError("model.params belongs to model.arch; put layer settings in each layer")
        return self


class OptimizerConfig(Strict):
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0, description="learning rate for the global batch (any world size)")
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    betas: tuple[float, float] = (0.9, 0.999)


class SchedulerConfig(Strict):
    name: Literal["none", "cosine", "step", "onecycle"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up (cosine)")
    step_size: int = Field(10, ge=1, description="epochs between decays (step)")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor (step)")
    min_lr: float = Field(0.0, ge=0, description="floor of the cosine schedule")


class EarlyStoppingConfig(Strict):
    patience: int = Field(5, ge=1, description="epochs without improvement of train.monitor")
    min_delta: float = Field(0.0, ge=0)


class TrainConfig(Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1, description="GLOBAL batch: split evenly across workers")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    grad_clip: float | None = Field(None, gt=0, description="max global grad norm")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    monitor: str | None = Field(
        None, description="val_loss or val_<metric> of the task; default: the task's (classification: val_accuracy)")
    early_stopping: EarlyStoppingConfig | None = None
    keep_best: bool = Field(True, description="final weights = best epoch by train.monitor")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    accumulate: int = Field(1, ge=1, description="gradient accumulation steps")
    compile: bool = False
    strategy: Literal["ddp", "fsdp"] = "ddp"
    sync_batchnorm: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    progress: bool = True
    freeze: Freeze = Field(None, description="'backbone' (all but the classifier) or regexes of parameter names")
    unfreeze_at_epoch: int | None = Field(None, ge=2, description="epoch (1-based) from which nothing is frozen")
    param_groups: list[ParamGroupConfig] = Field(default_factory=list,
                                                 description="per-regex learning rates / weight decay")
    layer_decay: float | None = Field(None, gt=0, le=1,
                                      description="layer-wise lr decay: layer i of n gets lr × decay^(n-1-i)")

    @model_validator(mode="after")
    def _finetune_rules(self) -> TrainConfig:
        check_finetune(self.freeze, self.unfreeze_at_epoch, self.epochs)
        return self


class EvalConfig(Strict):
    batch_size: int = Field(256, ge=1)
    plots: bool = True


class ServingConfig(Strict):
    """Batching defaults written into the package manifest; `dlforge serve` flags override them."""

    max_batch_size: int | None = Field(None, ge=1, description="rows per batch (default 32)")
    max_queue_delay_ms: float | None = Field(None, ge=0, description="wait for a fuller batch (default: measured)")
    max_batch_rows: int | None = Field(None, ge=1, description="rows one request may carry (default ~64 MiB)")


class ExportConfig(Strict):
    enabled: bool = True
    opset: int = Field(18, ge=13)
    tolerance: float = Field(1e-4, gt=0, description="max |onnx - torch| in the parity check")
    quantize: Literal["none", "int8"] = "none"
    version: str = "1"
    serving: ServingConfig = Field(default_factory=ServingConfig)


class ExperimentConfig(Strict):
    name: str = Field("experiment", pattern=r"^[A-Za-z0-9_.-]+$")
    task: str = Field("classification", description="what the model does (see dlforge/tasks): classification")
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(arch="cnn_small"))
    augment: list[ComponentSpec] = Field(default_factory=list)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    gan: GanConfig | None = Field(None, description="task: gan — discriminator, loss, EMA, FID classifier")
    denoise: DenoiseConfig | None = Field(None, description="task: denoise — the noise models")


from dlforge.config.generative import DenoiseConfig, GanConfig  # noqa: E402  (sections refer to the models above)

ExperimentConfig.model_rebuild()
