"""The experiment file, section by section, as pydantic models (the single source of validation).

Component lists (model layers, augmentations) are kept as plain `{type, value, params}` specs here;
the registry that owns each type validates its parameters (see `dlforge.experiment`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from dlforge.config.common import ComponentSpec, ModelConfig, OptimizerConfig, Strict
from dlforge.config.finetune import Freeze, ParamGroupConfig, check_finetune
from dlforge.config.generative import DenoiseConfig, GanConfig
from dlforge.config.tune import TuneConfig
from dlforge.decoding.search import SearchSettings

# The shared blocks (dlforge.config.common) are re-exported: every section is importable from here.
__all__ = [
    "ComponentSpec",
    "DataConfig",
    "DenoiseConfig",
    "EarlyStoppingConfig",
    "EvalConfig",
    "ExperimentConfig",
    "ExportConfig",
    "GanConfig",
    "ModelConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "ServingConfig",
    "Strict",
    "TrainConfig",
]


class DataConfig(Strict):
    dataset: str = Field("digits", description="digits | image_folder | synthetic")
    params: dict[str, Any] = Field(default_factory=dict, description="dataset-specific settings")
    val_fraction: float = Field(0.15, gt=0, lt=1)
    test_fraction: float = Field(0.15, gt=0, lt=1)
    classes: list[str] | None = Field(None, min_length=2, description="keep only these labels (in this order)")
    train_fraction: float = Field(1.0, gt=0, le=1, description="seeded stratified share of the train split to use")
    train_groups: int | list[str] | None = Field(
        None, description="keep only some groups (speakers, data.params.group_by) of the train split: N (drawn, "
                          "seeded) or their names; val and test are unchanged")
    split: Literal["stratified", "hash"] = Field(
        "stratified", description="how samples are split when the data has no train/ val/ test/ folders: "
                                  "stratified by class (or by group), or by a hash of (seed, file or group), "
                                  "which keeps every sample in its split as data is added")
    workers: int | Literal["auto"] = Field(
        "auto", validation_alias=AliasChoices("workers", "num_workers"),
        description="loader worker processes per training process, which read and decode samples; auto: none "
                    "for data in memory, else the usable cores (at most 8) shared among the processes")

    @field_validator("workers")
    @classmethod
    def _workers_not_negative(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be 0 or more, or auto")
        return value

    @field_validator("train_groups")
    @classmethod
    def _some_groups(cls, value: int | list[str] | None) -> int | list[str] | None:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"must be 1 or more groups, got {value} (e.g. train_groups: 3)")
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError("must name at least one group, each once (e.g. train_groups: [m1, f2, klatt])")
        return value

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must stay below 0.9 to leave data to train on")
        return self


class SchedulerConfig(Strict):
    name: Literal["none", "cosine", "step", "onecycle"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up (cosine)")
    step_size: int = Field(10, ge=1, description="epochs between decays (step)")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor (step)")
    min_lr: float = Field(0.0, ge=0, description="floor of the cosine schedule")


class EarlyStoppingConfig(Strict):
    patience: int = Field(5, ge=1, description="epochs without improvement of train.monitor")
    min_delta: float = Field(0.0, ge=0)


LoggerName = Literal["csv", "tensorboard", "mlflow"]


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
    threads: int | None = Field(None, ge=1, le=1024, description=(
        "CPU threads per worker for torch's ops (default: torch's choice, one per core; torchrun gives each "
        "worker 1). On a machine whose cores other jobs share, 1 can be many times faster"))
    progress: bool = True
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="also checkpoint inside an epoch, every this many optimizer steps (with the data "
                                "loader's position): --resume continues mid-epoch, bitwise as if never stopped")
    freeze: Freeze = Field(None, description="'backbone' (all but the classifier) or regexes of parameter names")
    unfreeze_at_epoch: int | None = Field(None, ge=2, description="epoch (1-based) from which nothing is frozen")
    param_groups: list[ParamGroupConfig] = Field(default_factory=list,
                                                 description="per-regex learning rates / weight decay")
    layer_decay: float | None = Field(None, gt=0, le=1,
                                      description="layer-wise lr decay: layer i of n gets lr × decay^(n-1-i)")
    loggers: list[LoggerName] = Field(
        default_factory=lambda: list[LoggerName](["csv"]),
        description="experiment tracking (main worker only): csv (metrics.csv, the default: no dependency and no "
                    "measurable cost), tensorboard (run_dir/tensorboard), mlflow (a run per run directory); "
                    "tensorboard and mlflow need pip install 'dlforge[tracking]'; [] logs nothing")
    log_every_steps: int = Field(10, ge=1, description="per-step loss, lr and samples/s every this many optimizer "
                                                       "steps (each log reads the loss back from the device)")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI (a server, sqlite:///…, …); default: "
                                                     "MLFLOW_TRACKING_URI, else sqlite in the run directory")

    @model_validator(mode="after")
    def _finetune_rules(self) -> TrainConfig:
        check_finetune(self.freeze, self.unfreeze_at_epoch, self.epochs)
        return self


class EvalConfig(Strict):
    batch_size: int = Field(256, ge=1)
    plots: bool = True
    decode: SearchSettings = Field(default_factory=SearchSettings,
                                   description="seq2seq: beam search for test metrics and the package (greedy too)")


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
    task: str = Field("classification", description="what the model does: classification | seq2seq | gan | denoise "
                                                    "| a plugin's (`dlforge tasks`)")
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(arch="cnn_small"))
    augment: list[ComponentSpec] = Field(default_factory=list)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    gan: GanConfig | None = Field(None, description="task: gan — discriminator, loss, EMA, FID classifier")
    denoise: DenoiseConfig | None = Field(None, description="task: denoise — the noise models")
    tune: TuneConfig | None = Field(None, description="the search space of `dlforge tune` (training ignores it)")
