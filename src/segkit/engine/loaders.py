"""Data loaders for a run: epoch-seeded order, sharded across processes under DDP."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from segkit.config import Config


def world() -> tuple[int, int]:
    """(number of processes, this process's rank); (1, 0) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class RepeatFactorSampler(Sampler[int]):
    """Draws images in proportion to their repeat factors, as LVIS's repeat factor sampling:
    a class in fraction ``f`` of the images has ``r = max(1, sqrt(t / f))`` and an image the
    largest ``r`` of its classes. Written here because torch's WeightedRandomSampler neither
    fixes its draw by (seed, epoch), which an exact resume needs, nor shards across processes.
    """

    def __init__(self, weights: np.ndarray, seed: int) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.seed, self.epoch = seed, 0
        self.replicas, self.rank = world()
        self.num_samples = len(self.weights) // self.replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):  # noqa: ANN204
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        draw = torch.multinomial(self.weights, self.num_samples * self.replicas, True, generator=g)
        return iter(draw[self.rank :: self.replicas].tolist())


def repeat_factors(presence: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Per-image repeat factors from an images x classes presence matrix (LVIS, t = 0.1)."""
    presence = np.asarray(presence, dtype=bool)
    fraction = presence.mean(0)
    per_class = np.where(fraction > 0, np.sqrt(threshold / np.maximum(fraction, 1e-12)), 1.0)
    per_class = np.maximum(per_class, 1.0)
    factors = np.where(presence, per_class[None], 1.0).max(1)
    return factors


def make_sampler(dataset: Dataset, train: bool, seed: int,
                 weights: np.ndarray | None = None) -> Sampler:
    """Training: a shuffle fixed by (seed, epoch), so a resumed run sees the same batches
    (drawn by ``weights`` when given). Validation: each sample on exactly one process, none
    repeated, so sums are exact."""
    replicas, rank = world()
    if train and weights is not None:
        return RepeatFactorSampler(weights, seed)
    if train:
        return DistributedSampler(dataset, replicas, rank, shuffle=True, seed=seed)
    return UnrepeatedDistributedSampler(dataset, replicas, rank, shuffle=False)


def make_loader(dataset: Dataset, cfg: Config, train: bool,
                weights: np.ndarray | None = None) -> DataLoader:
    """DataLoader with the run's batch size and workers; uint8 tensors keep transfers small.
    A streamed training set brings its own loader (LitData's, which shards and resumes)."""
    workers = cfg.data.num_workers
    if train and hasattr(dataset, "streaming_loader"):
        return dataset.streaming_loader(cfg.data.batch_size, workers)
    shard = len(dataset) // world()[0]  # type: ignore[arg-type]  # map-style: sized
    return DataLoader(
        dataset,
        batch_size=cfg.data.batch_size,
        sampler=make_sampler(dataset, train, cfg.run.seed, weights),
        drop_last=train and shard > cfg.data.batch_size,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


class RunData(pl.LightningDataModule):
    """Builds the loaders once the process group exists, so each rank gets its shard."""

    def __init__(self, train_set: Dataset, val_set: Dataset, cfg: Config,
                 train_weights: np.ndarray | None = None) -> None:
        super().__init__()
        self.train_set, self.val_set, self.cfg = train_set, val_set, cfg
        self.train_weights = train_weights

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.train_set, self.cfg, True, self.train_weights)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.val_set, self.cfg, False)
