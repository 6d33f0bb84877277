"""SSGRL (Chen et al., arXiv 1908.07325): semantic decoupling + semantic interaction.

Written by hand, module by module, because no maintained library ships it:
- ``SemanticDecoupling``: low-rank bilinear attention between each category's word
  embedding and every position of the backbone feature map -> one feature per category.
- ``GatedGNN``: a gated graph neural network over the label co-occurrence graph, T steps.
- ``SSGRL``: backbone -> decoupling -> GGNN -> per-category classifiers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from segkit.errors import SegkitError
from segkit.models.fcn import resnet_trunk


def cooccurrence_matrix(labels: np.ndarray) -> np.ndarray:
    """P(j | i) from an [N, C] 0/1 label matrix (rows of never-seen classes are zero)."""
    y = np.asarray(labels, dtype=np.float64)
    counts = y.T @ y
    occ = np.diag(counts).copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(occ[:, None] > 0, counts / np.maximum(occ[:, None], 1), 0.0)
    np.fill_diagonal(p, 0.0)
    return p.astype(np.float32)


def load_glove(path: str | Path, classes: list[str], dim: int | None = None) -> torch.Tensor:
    """Category embeddings from a GloVe-format text file (multi-word names averaged)."""
    path = Path(path)
    if not path.is_file():
        raise SegkitError(f"word embedding file not found: {path}")
    wanted = {w.lower() for c in classes for w in c.replace("-", " ").replace("/", " ").split()}
    vectors: dict[str, np.ndarray] = {}
    with open(path, encoding="utf8") as f:
        for line in f:
            parts = line.rstrip().split(" ")
            if parts[0].lower() in wanted:
                vectors[parts[0].lower()] = np.asarray(parts[1:], dtype=np.float32)
    if not vectors:
        raise SegkitError(f"{path}: none of the class names' words are in this embedding file")
    d = dim or len(next(iter(vectors.values())))
    out = np.zeros((len(classes), d), np.float32)
    for i, c in enumerate(classes):
        words = [vectors[w.lower()] for w in c.replace("-", " ").replace("/", " ").split()
                 if w.lower() in vectors]
        if words:
            out[i] = np.mean(words, axis=0)
    return torch.from_numpy(out)


class SemanticDecoupling(nn.Module):
    """f_c = sum_wh a_{c,wh} f_wh with a = softmax_wh(f_a(P^T tanh(U^T f_wh * V^T e_c)))."""

    def __init__(self, feat_dim: int, embed_dim: int, rank: int) -> None:
        super().__init__()
        self.u = nn.Linear(feat_dim, rank, bias=False)
        self.v = nn.Linear(embed_dim, rank, bias=False)
        self.p = nn.Linear(rank, rank)
        self.attend = nn.Linear(rank, 1)

    def forward(
        self, feats: torch.Tensor, embeddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """feats [B,D,H,W], embeddings [C,E] -> (category features [B,C,D], attention [B,C,HW])."""
        b, d, h, w = feats.shape
        flat = feats.flatten(2).transpose(1, 2)  # [B, HW, D]
        joint = torch.tanh(self.u(flat)[:, None] * self.v(embeddings)[None, :, None])  # [B,C,HW,r]
        scores = self.attend(self.p(joint)).squeeze(-1)  # [B, C, HW]
        attention = scores.softmax(dim=-1)
        return attention @ flat, attention


class GatedGNN(nn.Module):
    """Gated graph propagation over a fixed adjacency (messages along and against edges)."""

    def __init__(self, dim: int, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.w_z, self.u_z = nn.Linear(2 * dim, dim), nn.Linear(dim, dim, bias=False)
        self.w_r, self.u_r = nn.Linear(2 * dim, dim), nn.Linear(dim, dim, bias=False)
        self.w_h, self.u_h = nn.Linear(2 * dim, dim), nn.Linear(dim, dim, bias=False)

    def forward(self, h: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        """h [B,C,D], adjacency [C,C] -> h after ``steps`` gated updates."""
        for _ in range(self.steps):
            a = torch.cat([adjacency @ h, adjacency.t() @ h], dim=-1)  # [B, C, 2D]
            z = torch.sigmoid(self.w_z(a) + self.u_z(h))
            r = torch.sigmoid(self.w_r(a) + self.u_r(h))
            candidate = torch.tanh(self.w_h(a) + self.u_h(r * h))
            h = (1 - z) * h + z * candidate
        return h


class SSGRL(nn.Module):
    """Backbone -> semantic decoupling -> gated GNN -> one classifier per category."""

    embeddings: torch.Tensor  # a buffer (word vectors) or a parameter (learnt)
    adjacency: torch.Tensor  # a buffer

    def __init__(
        self,
        num_classes: int,
        encoder: str = "resnet101",
        embeddings: torch.Tensor | None = None,
        rank: int = 512,
        steps: int = 3,
        embed_dim: int = 300,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        self.encoder, feat_dim = resnet_trunk(encoder, pretrained)
        if embeddings is not None:
            self.register_buffer("embeddings", embeddings.float())
        else:  # no word vectors given: learn the category embeddings
            self.embeddings = nn.Parameter(torch.randn(num_classes, embed_dim) * 0.1)
        self.register_buffer("adjacency", torch.zeros(num_classes, num_classes))
        self.decouple = SemanticDecoupling(feat_dim, self.embeddings.shape[1], rank)
        self.ggnn = GatedGNN(feat_dim, steps)
        self.output = nn.Sequential(nn.Linear(2 * feat_dim, feat_dim), nn.Tanh())
        self.class_weight = nn.Parameter(torch.randn(num_classes, feat_dim) * 0.01)
        self.class_bias = nn.Parameter(torch.zeros(num_classes))

    def set_adjacency(self, adjacency: np.ndarray | torch.Tensor) -> None:
        """Label co-occurrence P(j|i) computed from the training labels."""
        self.adjacency.copy_(torch.as_tensor(adjacency, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        per_class, _ = self.decouple(feats, self.embeddings)
        h = self.ggnn(per_class, self.adjacency)
        o = self.output(torch.cat([h, per_class], dim=-1))  # [B, C, D]
        return (o * self.class_weight).sum(-1) + self.class_bias
