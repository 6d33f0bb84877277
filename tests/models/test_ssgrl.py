"""SSGRL, module by module: co-occurrence graph, semantic decoupling, gated GNN, whole model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segkit.errors import SegkitError
from segkit.models.ssgrl import SSGRL, GatedGNN, SemanticDecoupling, cooccurrence_matrix, load_glove


def test_cooccurrence_by_hand() -> None:
    y = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    p = cooccurrence_matrix(y)
    # P(1|0) = 2/3, P(0|1) = 2/3, class 2 never seen -> zero row, diagonal zero
    np.testing.assert_allclose(p, [[0, 2 / 3, 0], [2 / 3, 0, 0], [0, 0, 0]], atol=1e-6)


def test_decoupling_shapes_and_attention_is_a_distribution() -> None:
    torch.manual_seed(0)
    sd = SemanticDecoupling(feat_dim=8, embed_dim=5, rank=6)
    feats, emb = torch.randn(2, 8, 3, 4), torch.randn(7, 5)
    per_class, att = sd(feats, emb)
    assert per_class.shape == (2, 7, 8) and att.shape == (2, 7, 12)
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 7))
    # each category feature is the attention-weighted sum of positions
    flat = feats.flatten(2).transpose(1, 2)
    torch.testing.assert_close(per_class[1, 3], (att[1, 3, :, None] * flat[1]).sum(0))


def test_decoupling_attends_where_the_embedding_matches() -> None:
    sd = SemanticDecoupling(feat_dim=2, embed_dim=2, rank=2)
    with torch.no_grad():
        sd.u.weight.copy_(torch.eye(2) * 5)
        sd.v.weight.copy_(torch.eye(2) * 5)
        sd.p.weight.copy_(torch.eye(2))
        sd.p.bias.zero_()
        sd.attend.weight.fill_(5.0)
        sd.attend.bias.zero_()
    feats = torch.zeros(1, 2, 1, 2)
    feats[0, 0, 0, 0] = 1.0  # position 0 shows feature 0, position 1 feature 1
    feats[0, 1, 0, 1] = 1.0
    _, att = sd(feats, torch.eye(2))
    assert att[0, 0, 0] > 0.9 and att[0, 1, 1] > 0.9


def test_ggnn_passes_messages_only_along_edges() -> None:
    torch.manual_seed(0)
    g = GatedGNN(dim=4, steps=1)
    h = torch.randn(1, 3, 4)
    adj = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # edge 0 -> 1
    base = g(h, adj)
    changed = h.clone()
    changed[0, 1] += 1.0  # node 1's feature changes
    out = g(changed, adj)
    assert not torch.allclose(out[0, 0], base[0, 0])  # node 0 hears node 1
    torch.testing.assert_close(out[0, 2], base[0, 2])  # node 2 is not connected


def test_ggnn_permutation_equivariant() -> None:
    torch.manual_seed(1)
    g = GatedGNN(dim=4, steps=3)
    h, adj = torch.randn(2, 5, 4), torch.rand(5, 5)
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(
        g(h, adj)[:, perm], g(h[:, perm], adj[perm][:, perm]), atol=1e-5, rtol=1e-5
    )


def test_ssgrl_forward_backward(tmp_path) -> None:
    (tmp_path / "glove.txt").write_text("circle 1 0 0\nsquare 0 1 0\nred 0 0 1\n")
    emb = load_glove(tmp_path / "glove.txt", ["circle", "square", "red circle"])
    torch.testing.assert_close(emb[2], torch.tensor([0.5, 0.0, 0.5]))
    model = SSGRL(3, "resnet18", emb, rank=16, steps=2)
    model.set_adjacency(np.eye(3))
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3)
    out.sum().backward()
    assert model.class_weight.grad is not None and model.decouple.u.weight.grad is not None
    with pytest.raises(SegkitError, match="none of the class names"):
        load_glove(tmp_path / "glove.txt", ["zebra"])
