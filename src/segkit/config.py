"""One validated run configuration: YAML file + CLI overrides, saved with every run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from segkit.errors import SegkitError

IGNORE_INDEX = 255
TaskName = Literal["segment", "classify", "multilabel"]
# What a run of each task trains when no model or dataset is named (the write-ups' choices).
TASK_DEFAULTS: dict[str, dict[str, str]] = {
    "segment": {"model": "unet", "data": "shapes"},
    "classify": {"model": "resnet18", "data": "shapes-cls"},
    "multilabel": {"model": "resnet101", "data": "shapes-multilabel"},
}

DEFAULT_ENCODER = "resnet18"  # what a model with an encoder and no entry below gets
# Each model's encoder when none is named, where it is not DEFAULT_ENCODER; the model
# registry tags its entries from here and ``segkit models`` lists it. NO_ENCODER: the network
# is one piece (the classic U-Net, the classifiers named by their architecture).
NO_ENCODER = ""
MODEL_DEFAULT_ENCODERS: dict[str, str] = {
    "segformer": "mit_b0", "dpt": "tu-vit_tiny_patch16_224", "hf-segformer": "b0",
    "hf-upernet": "convnext-tiny", "hf-mask2former": "swin-tiny", "hf-eomt": "vit-small",
    "deeplabv3": "resnet50",
    **dict.fromkeys(("unet-classic", "lenet", "smallcnn", "vgg11", "resnet18", "resnet34",
                     "resnet50", "resnet101", "googlenet", "densenet121"), NO_ENCODER)}


def default_encoder(model: str) -> str:
    """The encoder ``model`` trains when none is named (NO_ENCODER: it has none)."""
    return MODEL_DEFAULT_ENCODERS.get(model, DEFAULT_ENCODER)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Which dataset, where it lives and how it is batched."""

    name: str = Field("shapes", description="dataset name (segkit datasets)")
    root: str | None = Field(None, description="where the dataset's files are")
    image_size: tuple[int, int] = (64, 64)
    num_train: int = Field(400, ge=1, description="generated datasets: training samples")
    num_val: int = Field(100, ge=1, description="generated datasets: validation samples")
    seed: int = 0
    batch_size: int = Field(16, ge=1)
    num_workers: int = Field(0, ge=0, description="data loader worker processes")
    val_fraction: float = Field(0.2, gt=0, lt=1)
    train_split: str = "train"
    val_split: str = "val"
    on_bad_image: Literal["fail", "skip"] = "fail"
    sampler: Literal["uniform", "balanced"] = Field(
        "uniform", description="balanced: images with rare classes drawn more often (repeat "
        "factor sampling)")
    download: bool = Field(False, description="download the public archive if missing (online)")
    label_map: dict[int, int] | None = Field(
        None, description="folder: remap mask values, e.g. {255: 1} for 0/255 binary masks")
    reduce_zero_label: bool = Field(
        False, description="folder: mask value 0 -> ignore, k -> k-1 (ADE20K style)")

    @field_validator("label_map")
    @classmethod
    def _byte_labels(cls, v: dict[int, int] | None) -> dict[int, int] | None:
        bad = [k for pair in (v or {}).items() for k in pair if not 0 <= k <= 255]
        if bad:
            raise ValueError(f"mask values are 0..255 (255 = ignore), got {bad[0]}")
        return v

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 8:
            raise ValueError("image_size must be at least 8x8")
        return v


class ModelConfig(_Section):
    """Architecture by name, its encoder and weights."""

    name: str = Field("unet", description="model name (segkit models)")
    encoder: str = Field(DEFAULT_ENCODER, description="encoder/backbone, e.g. resnet18")
    weights: str | None = Field(None, description="'imagenet', a local file, a Hugging "
                                "Face-layout folder or hf:ORG/NAME (from the HF cache)")
    norm: Literal["bn", "in", "gn", "evonorm", "evonorm-s0", "evonorm-b0"] = "bn"
    word_embeddings: str | None = Field(None, description="ssgrl: GloVe-format text file")
    ssgrl_steps: int = Field(3, ge=1, description="ssgrl: gated GNN time steps")
    ssgrl_rank: int = Field(512, ge=8, description="ssgrl: low-rank bilinear attention dim")
    decoder_channels: list[int] | None = Field(
        None, description="smp decoders: channels per decoder stage (smaller is faster)"
    )


class LossConfig(_Section):
    """Loss by name; '+' combines terms (e.g. 'ce+dice')."""

    name: str = Field("auto", description="ce, weighted-ce, focal, dice, bce, lovasz or sums "
                      "like ce+dice")
    class_weights: list[float] | None = None
    focal_gamma: float = Field(2.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="ce / bce: smooth the targets")
    ignore_index: int = IGNORE_INDEX


class OptimConfig(_Section):
    """Optimiser and learning-rate schedule."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    scheduler: Literal["plateau", "poly", "cosine", "step", "none"] = "plateau"
    warmup_epochs: int = Field(0, ge=0)
    patience: int = Field(3, ge=0, description="plateau: epochs without improvement")
    factor: float = Field(0.5, gt=0, lt=1, description="plateau/step: LR multiplier")
    step_size: int = Field(10, ge=1)
    per_step: bool = Field(False, description="step the schedule every iteration, not epoch")


class AugConfig(_Section):
    """Augmentation applied to image and mask together."""

    preset: Literal["none", "light", "strong"] = "light"
    crop_size: tuple[int, int] | None = None
    scale: tuple[float, float] | None = Field(
        None, description="random rescale range, e.g. [0.5, 2]")
    cutmix_prob: float = Field(0.0, ge=0, le=1)
    copyblob_prob: float = Field(0.0, ge=0, le=1)
    copyblob_classes: list[int] | None = Field(None, description="default: the rare classes")
    crop_scales: list[float] = Field(
        [1.0, 0.9, 0.8, 0.6, 0.5],
        description="multilabel: random crop sides as fractions ({640,576,512,384,320}/640)",
    )
    box_crops: bool = Field(
        False, description="multilabel: take the crop_scales crops by the objects' boxes and "
        "label each crop by the objects it shows (needs boxes: COCO); evaluation resizes")
    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.0, ge=0, le=1)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


def budget_seconds(text: str) -> float:
    """'90s', '10m', '1h30m', '2h' or plain seconds -> seconds (ValueError when unreadable)."""
    import re

    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"time budget '{text}' is not like 90s, 10m, 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


class RunConfig(_Section):
    """Epochs, device, checkpoints and where results go."""

    out: str = Field("runs/default", description="run directory (default runs/default)")
    recipe: Literal["auto", "seed"] = Field(
        "auto", description="auto (default): plan the recipe from the data, see plan.yaml; "
        "seed: the write-ups' fixed defaults")
    time_budget: str | None = Field(None, description="train within this time, e.g. 10m, 1h30m "
                                    "(epochs planned from timed steps)")
    race: Literal["auto", "on", "off"] = Field(
        "auto", description="race candidate networks (or learning rates for a named one) on a "
        "held-out part of the training data and keep the best (default: when there are 100+ "
        "training images)")
    ema: bool | None = Field(None, description="EMA of the weights (None: the plan decides)")
    epochs: int = Field(10, ge=1)
    accumulate: int = Field(1, ge=1, description="gradient accumulation steps")
    device: Literal["auto", "cpu", "cuda", "gpu", "mps"] = "auto"
    precision: Literal["32", "16-mixed", "bf16-mixed"] = "32"
    seed: int = 42
    deterministic: bool = False
    monitor: str = "auto"
    early_stop_patience: int | None = Field(None, ge=1)
    save_every_steps: int = Field(0, ge=0, description="also write last.ckpt every N training "
                                  "steps (0: at epoch ends only); with --data litdata the "
                                  "loader's place is saved, so a resume continues mid-epoch")
    limit_train_batches: float | int | None = None
    limit_val_batches: float | int | None = None
    progress: bool = True
    grid_images: int = Field(6, ge=0)
    val_window: tuple[int, int] | None = Field(
        None, description="validate big images in sliding windows of this size (less memory)")
    devices: int | list[int] | Literal["auto"] = Field(
        1, description="devices (processes) per node, or 'auto'")
    num_nodes: int = Field(1, ge=1, description="machines taking part (torchrun / SLURM set "
                           "ranks)")
    strategy: Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"] = "auto"
    sync_bn: bool = Field(False, description="synchronised BatchNorm across processes")
    compile: bool = Field(False, description="torch.compile the model")
    channels_last: bool = Field(False, description="NHWC memory format")
    # mlflow reads MLFLOW_TRACKING_URI (else runs/mlflow.db); wandb is offline unless logged in
    loggers: list[Literal["tensorboard", "csv", "mlflow", "wandb"]] = Field(
        ["tensorboard", "csv"], description="repeatable; default tensorboard + csv (metrics.csv "
        "is always written)")
    log_checkpoint: bool = Field(False, description="mlflow / wandb: upload the best checkpoint "
                                 "too")

    @field_validator("time_budget")
    @classmethod
    def _readable_budget(cls, v: str | None) -> str | None:
        if v is not None and budget_seconds(v) <= 0:
            raise ValueError("time budget must be positive")
        return v

    @field_validator("devices")
    @classmethod
    def _positive_devices(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("devices must be at least 1 (or 'auto')")
        return v


class Config(_Section):
    """The whole resolved configuration of one run."""

    task: TaskName = Field("segment", description="segment (default), classify or multilabel "
                           "(segkit tasks)")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    aug: AugConfig = AugConfig()
    run: RunConfig = RunConfig()

    @model_validator(mode="after")
    def _task_default_model(self) -> Config:
        # Each task's default model and built-in data, unless they were named.
        defaults = TASK_DEFAULTS[self.task]
        # a default filled in here is not the user's choice: it stays out of the fields set
        if "name" not in self.model.model_fields_set:
            self.model.name = defaults["model"]
            self.model.model_fields_set.discard("name")
        if "name" not in self.data.model_fields_set:
            self.data.name = defaults["data"]
            self.data.model_fields_set.discard("name")
        if "encoder" not in self.model.model_fields_set and MODEL_DEFAULT_ENCODERS.get(
                self.model.name):  # a network without an encoder keeps the field as it is
            self.model.encoder = MODEL_DEFAULT_ENCODERS[self.model.name]
            self.model.model_fields_set.discard("encoder")
        return self

    @model_validator(mode="after")
    def _crop_fits(self) -> Config:
        crop = self.aug.crop_size
        if crop and (crop[0] > self.data.image_size[0] or crop[1] > self.data.image_size[1]):
            raise ValueError(
                f"aug.crop_size {list(crop)} is bigger than data.image_size "
                f"{list(self.data.image_size)}; use a crop no larger than the images"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, not tuples) for YAML and checkpoints."""
        plain: dict[str, Any] = _plain(self.model_dump())
        return plain

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        section = ".".join(str(p) for p in first["loc"][:-1])
        allowed = _allowed_keys(section)
        msg = f"unknown key; allowed here: {', '.join(allowed)}"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: invalid config '{loc}': {msg}{more}"


def _allowed_keys(section: str) -> list[str]:
    model: type[BaseModel] = Config
    for part in [p for p in section.split(".") if p]:
        field = model.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type):
            return sorted(model.model_fields)
        model = field.annotation
    return sorted(model.model_fields)


def config_field(key: str) -> FieldInfo:
    """The field a dotted key names (``run.epochs``): its type, default and description."""
    model: type[BaseModel] = Config
    *sections, name = key.split(".")
    for part in sections:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    return model.model_fields[name]


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split 'a.b=value' into (['a', 'b'], parsed YAML value)."""
    if "=" not in item:
        raise SegkitError(f"--set expects key=value, got '{item}' (e.g. --set optim.lr=0.01)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return [p for p in key.strip().split(".") if p], value


def apply_override(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``tree[k1][k2]... = value``, creating sections as needed."""
    node = tree
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise SegkitError(f"cannot set '{'.'.join(keys)}': '{k}' is not a section")
        node = nxt
    node[keys[-1]] = value


def build_config(
    base: dict[str, Any] | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    source: str = "config",
) -> Config:
    """Validate ``base`` with dotted overrides applied.

    Args:
        base: a nested config dict (e.g. a loaded YAML file); defaults when None.
        overrides: ``{"section.key": value}`` or ``["section.key=value", ...]``.
        source: what ``base`` came from, named in error messages.

    Returns:
        The validated ``Config``; unnamed keys keep their defaults (per task for model / data).

    Raises:
        SegkitError: an unknown key (the allowed ones are listed) or a bad value.
    """
    tree: dict[str, Any] = _plain(base or {})
    items = (
        overrides.items()
        if isinstance(overrides, dict)
        else [parse_override(o) for o in (overrides or [])]
    )
    for key, value in items:
        keys = key.split(".") if isinstance(key, str) else key
        apply_override(tree, keys, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise SegkitError(_format_error(err, source)) from None


def load_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> Config:
    """Load a YAML config (or defaults) and apply overrides."""
    base: dict[str, Any] = {}
    source = "config"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise SegkitError(f"config file not found: {p}")
        try:
            base = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise SegkitError(f"{p}: not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(base, dict):
            raise SegkitError(f"{p}: expected a mapping of sections at the top level")
        source = str(p)
    return build_config(base, overrides, source)
