"""Hugging Face ``transformers`` segmentation models: SegFormer, UPerNet, Mask2Former, EoMT.

Install with ``pip install 'segkit[hf]'`` (an extra, not a dependency: its install cost is in
``pyproject.toml`` beside it). Each model is built from a published configuration named by
``--encoder`` (random init), or from the ``config.json`` of ``--weights`` when that is a
Hugging Face folder or ``hf:ORG/NAME`` of the same model type (the weights then load by name).

Per-pixel models (SegFormer, UPerNet) return logits at the input's size. Mask-classification
models (Mask2Former, EoMT) predict N masks with a class each; here they train with their own
Hungarian-matching loss from segkit's semantic masks (one binary mask + class label per class
present) and their outputs become per-pixel class scores (sum over queries of class
probability x mask probability, as ``post_process_semantic_segmentation`` does), returned as
log-scores so softmax, TTA, sliding windows, export and serving treat them like any logits.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import ModelConfig
from segkit.errors import SegkitError

EPS = 1e-6


def require_transformers() -> Any:
    """The ``transformers`` module, or a one-line error saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise SegkitError("the hf-* models need Hugging Face transformers: "
                          "pip install 'segkit[hf]'") from None
    transformers.logging.set_verbosity_error()  # backbone-compatibility chatter
    return transformers


# ---- published configurations by name ------------------------------------------------------
def _mit(hidden: list[int], depths: list[int], decoder: int) -> dict[str, Any]:
    return {"hidden_sizes": hidden, "depths": depths, "decoder_hidden_size": decoder,
            "num_attention_heads": [1, 2, 5, 8]}


SEGFORMER = {
    "b0": _mit([32, 64, 160, 256], [2, 2, 2, 2], 256),
    "b1": _mit([64, 128, 320, 512], [2, 2, 2, 2], 256),
    "b2": _mit([64, 128, 320, 512], [3, 4, 6, 3], 768),
    "b3": _mit([64, 128, 320, 512], [3, 4, 18, 3], 768),
    "b4": _mit([64, 128, 320, 512], [3, 8, 27, 3], 768),
    "b5": _mit([64, 128, 320, 512], [3, 6, 40, 3], 768),
}
STAGES = ["stage1", "stage2", "stage3", "stage4"]
SWIN = {  # Swin-T/S/B as published; "mini" is a light one for CPUs and tests
    "swin-mini": {"embed_dim": 48, "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24]},
    "swin-tiny": {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24]},
    "swin-small": {"embed_dim": 96, "depths": [2, 2, 18, 2], "num_heads": [3, 6, 12, 24]},
    "swin-base": {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32]},
}
CONVNEXT = {
    "convnext-tiny": {"hidden_sizes": [96, 192, 384, 768], "depths": [3, 3, 9, 3]},
    "convnext-small": {"hidden_sizes": [96, 192, 384, 768], "depths": [3, 3, 27, 3]},
    "convnext-base": {"hidden_sizes": [128, 256, 512, 1024], "depths": [3, 3, 27, 3]},
}
VIT = {  # EoMT's encoder sizes (the paper's models are DINOv2 ViT-S/B/L)
    "vit-tiny": {"hidden_size": 192, "num_hidden_layers": 12, "num_attention_heads": 3},
    "vit-small": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6},
    "vit-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12},
    "vit-large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16},
}
LIGHT_MASK2FORMER = {"hidden_dim": 128, "feature_size": 128, "mask_feature_size": 128,
                     "num_queries": 50, "decoder_layers": 6, "encoder_layers": 3,
                     "dim_feedforward": 512, "encoder_feedforward_dim": 512,
                     "train_num_points": 3136}


def _backbone(tf: Any, name: str) -> Any:
    if name in SWIN:
        return tf.SwinConfig(**SWIN[name], out_features=STAGES)
    if name in CONVNEXT:
        return tf.ConvNextConfig(**CONVNEXT[name], out_features=STAGES)
    raise KeyError(name)


def _segformer(tf: Any, encoder: str) -> Any:
    return tf.SegformerConfig(**SEGFORMER[encoder])


def _upernet(tf: Any, encoder: str) -> Any:
    return tf.UperNetConfig(backbone_config=_backbone(tf, encoder), use_auxiliary_head=False)


def _mask2former(tf: Any, encoder: str) -> Any:
    light = LIGHT_MASK2FORMER if encoder == "swin-mini" else {}
    return tf.Mask2FormerConfig(backbone_config=_backbone(tf, encoder), **light)


def _eomt(tf: Any, encoder: str) -> Any:
    queries = 200 if encoder == "vit-large" else 100
    return tf.EomtConfig(**VIT[encoder], image_size=640, patch_size=16, num_queries=queries)


HF_ARCHS: dict[str, dict[str, Any]] = {
    "hf-segformer": {"desc": "SegFormer (transformers): MiT encoder + all-MLP decoder; "
                     "--encoder b0..b5", "encoders": list(SEGFORMER), "config": _segformer,
                     "class": "SegformerForSemanticSegmentation", "type": "segformer",
                     "multiple": 32, "lr": 1e-3},
    "hf-upernet": {"desc": "UPerNet (transformers) on ConvNeXt or Swin; --encoder "
                   "convnext-tiny|small|base, swin-mini|tiny|small|base",
                   "encoders": list(CONVNEXT) + list(SWIN),
                   "config": _upernet, "class": "UperNetForSemanticSegmentation",
                   "type": "upernet", "multiple": 32, "lr": 1e-3},
    "hf-mask2former": {"desc": "Mask2Former (transformers), semantic: masked-attention mask "
                       "classification, Hungarian loss; --encoder swin-mini|tiny|small|base",
                       "encoders": list(SWIN), "config": _mask2former,
                       "class": "Mask2FormerForUniversalSegmentation", "type": "mask2former",
                       "multiple": 32, "own_loss": True, "lr": 1e-4, "onnx_fixed_size": True},
    "hf-eomt": {"desc": "EoMT (transformers): encoder-only mask transformer on a plain ViT; "
                "--encoder vit-tiny|small|base|large", "encoders": list(VIT),
                "config": _eomt, "class": "EomtForUniversalSegmentation", "type": "eomt",
                "multiple": 16, "own_loss": True, "lr": 1e-4, "available": "EomtConfig"},
}


def hf_available(arch: str) -> bool:
    """True when the installed transformers has ``arch`` (EoMT came in 4.54)."""
    try:
        import transformers
    except ImportError:
        return False
    return hasattr(transformers, HF_ARCHS[arch].get("available", HF_ARCHS[arch]["class"]))


# ---- wrappers --------------------------------------------------------------------------------
class HfPixelSegmenter(nn.Module):
    """A transformers per-pixel model as ``x -> logits`` at the input's height and width."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf
        self.weights_report = ""  # set when built from pretrained weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.hf(pixel_values=x).logits
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear",
                                   align_corners=False)
        return logits


def semantic_targets(target: torch.Tensor, num_labels: int, ignore_index: int
                     ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per image: binary masks [N,H,W] (float) and class labels [N] of the classes present.

    Ignored pixels belong to no mask.
    """
    masks, labels = [], []
    for t in target:
        present = [c for c in torch.unique(t).tolist() if c != ignore_index and c < num_labels]
        classes = torch.tensor(present, dtype=torch.long, device=t.device)
        masks.append((t[None] == classes.view(-1, 1, 1)).float())
        labels.append(classes)
    return masks, labels


class HfMaskClassifier(nn.Module):
    """A transformers mask-classification model as ``x -> per-pixel log class scores``.

    Binary data gets two labels (background, foreground) and returns the one logit
    ``log s_fg - log s_bg``, so ``sigmoid`` gives the normalised foreground score.
    """

    def __init__(self, hf: nn.Module, binary: bool) -> None:
        super().__init__()
        self.hf: Any = hf  # a transformers model (its outputs and config are untyped)
        self.binary = binary
        self.weights_report = ""  # set when built from pretrained weights

    def class_scores(self, class_logits: torch.Tensor, mask_logits: torch.Tensor,
                     size: tuple[int, ...]) -> torch.Tensor:
        """Log per-pixel class scores [B,C,H,W] from query class and mask logits."""
        probs = class_logits.softmax(-1)[..., :-1]  # the last class is "no object"
        scores = torch.einsum("bqc,bqhw->bchw", probs, mask_logits.sigmoid())
        scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
        log_scores = scores.clamp_min(EPS).log()
        if self.binary:
            return log_scores[:, 1:2] - log_scores[:, 0:1]
        return log_scores

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.hf(pixel_values=x)
        return self.class_scores(out.class_queries_logits, out.masks_queries_logits,
                                 x.shape[-2:])

    def loss_and_logits(self, x: torch.Tensor, target: torch.Tensor, ignore_index: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's own Hungarian-matching loss (class CE + mask BCE + Dice, auxiliary
        layers included) for semantic targets [B,H,W], and the per-pixel logits."""
        masks, labels = semantic_targets(target.long(), self.hf.config.num_labels, ignore_index)
        out = self.hf(pixel_values=x, mask_labels=masks, class_labels=labels)
        return out.loss, self.class_scores(out.class_queries_logits, out.masks_queries_logits,
                                           x.shape[-2:])


@functools.cache
def _dynamic_eomt_class() -> type:
    """EoMT whose position embeddings are resized to any grid (transformers' EoMT is fixed to
    ``image_size``); the published weights load unchanged."""
    tf: Any = require_transformers()
    from transformers.models.eomt import modeling_eomt as me

    class DynamicEomtEmbeddings(me.EomtEmbeddings):
        patch_size: int

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            b, _, h, w = pixel_values.shape
            tokens = self.patch_embeddings(pixel_values)
            grid = (h // self.patch_size, w // self.patch_size)
            pos = self.position_embeddings.weight
            side = math.isqrt(pos.shape[0])
            if grid != (side, side):
                pos = F.interpolate(pos.reshape(1, side, side, -1).permute(0, 3, 1, 2), size=grid,
                                    mode="bicubic", align_corners=False)
                pos = pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)
            tokens = tokens + pos[None]
            prefix = [self.cls_token.expand(b, -1, -1), self.register_tokens.expand(b, -1, -1)]
            return self.dropout(torch.cat([*prefix, tokens], dim=1))

    class DynamicEomt(tf.EomtForUniversalSegmentation):
        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.embeddings.__class__ = DynamicEomtEmbeddings

        def forward(self, pixel_values: torch.Tensor, **kwargs: Any) -> Any:
            p = self.config.patch_size
            self.grid_size = (pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
            return super().forward(pixel_values, **kwargs)

    return DynamicEomt


# ---- building --------------------------------------------------------------------------------
def pretrained_config(weights: str | None, model_type: str) -> Path | None:
    """The folder of ``weights`` when it holds a transformers ``config.json`` of
    ``model_type`` (an HF folder or ``hf:ORG/NAME``), else None."""
    from segkit.models.weights import hub_snapshot

    if not weights or not (weights.startswith("hf:") or Path(weights).is_dir()):
        return None
    folder = hub_snapshot(weights[3:]) if weights.startswith("hf:") else Path(weights)
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        found = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError):
        return None
    return folder if found == model_type else None


def hf_builder(arch: str) -> Callable[..., nn.Module]:
    """A registry builder for the transformers architecture ``arch`` (a key of HF_ARCHS)."""
    spec = HF_ARCHS[arch]

    def build(cfg: ModelConfig, out_channels: int, in_channels: int = 3,
              classes: list[str] | None = None) -> nn.Module:
        tf = require_transformers()
        if not hf_available(arch):
            raise SegkitError(f"model '{arch}' needs a newer transformers than "
                              f"{tf.__version__}: pip install -U 'segkit[hf]'")
        own_loss = bool(spec.get("own_loss"))
        num_labels = 2 if own_loss and out_channels == 1 else out_channels
        folder = pretrained_config(cfg.weights, spec["type"])
        if folder is not None:
            config = tf.AutoConfig.from_pretrained(str(folder))
        elif cfg.encoder in spec["encoders"]:
            config = spec["config"](tf, cfg.encoder)
        else:
            import difflib

            close = difflib.get_close_matches(cfg.encoder, spec["encoders"], 1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SegkitError(f"encoder '{cfg.encoder}' does not fit model '{arch}'{hint}; it "
                              f"takes {', '.join(spec['encoders'])}")
        names = classes if classes and len(classes) == num_labels else [
            f"class_{i}" for i in range(num_labels)]
        config.num_labels = num_labels
        config.id2label = dict(enumerate(names))
        config.label2id = {n: i for i, n in enumerate(names)}
        backbone = getattr(config, "backbone_config", None)
        for part in (config, backbone):
            if part is not None and hasattr(part, "num_channels"):
                part.num_channels = in_channels
        if backbone is not None and backbone.model_type == "swin":
            # Swin's SDPA path reshapes a non-contiguous tensor, which torch.export (the ONNX
            # exporter for UPerNet's pyramid) cannot decompose; eager attention exports
            backbone._attn_implementation = "eager"
        kind: Any = (_dynamic_eomt_class() if spec["type"] == "eomt"
                     else getattr(tf, spec["class"]))
        report, fresh = "", -1
        if folder is None:
            hf = kind(config)
        else:  # transformers' loader renames keys of older checkpoints; new heads initialise
            hf, found = kind.from_pretrained(str(folder), config=config,
                                             ignore_mismatched_sizes=True,
                                             output_loading_info=True)
            fresh = len(found["missing_keys"]) + len(found["mismatched_keys"])
            report = (f"loaded {folder} with transformers: {len(hf.state_dict()) - fresh} "
                      f"tensors, {fresh} initialised (new head for {num_labels} classes), "
                      f"{len(found['unexpected_keys'])} in the file unused")
        net: Any = HfMaskClassifier(hf, out_channels == 1) if own_loss else HfPixelSegmenter(hf)
        net.weights_report = report
        net.weights_fresh = fresh if folder is not None else -1
        return net

    return build


def unwrap_hf(model: nn.Module) -> nn.Module | None:
    """The transformers model inside a segkit model, if there is one."""
    for module in model.modules():
        if isinstance(module, (HfPixelSegmenter, HfMaskClassifier)):
            return module.hf
    return None
