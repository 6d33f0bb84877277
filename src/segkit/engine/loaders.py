"""Data loaders for a run: epoch-seeded order, sharded across processes under DDP."""

from __future__ import annotations

import lightning.pytorch as pl
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


def make_sampler(dataset: Dataset, train: bool, seed: int) -> Sampler:
    """Training: a shuffle fixed by (seed, epoch), so a resumed run sees the same batches.
    Validation: each sample on exactly one process, none repeated, so sums are exact."""
    replicas, rank = world()
    if train:
        return DistributedSampler(dataset, replicas, rank, shuffle=True, seed=seed)
    return UnrepeatedDistributedSampler(dataset, replicas, rank, shuffle=False)


def make_loader(dataset: Dataset, cfg: Config, train: bool) -> DataLoader:
    """DataLoader with the run's batch size and workers; uint8 tensors keep transfers small."""
    workers = cfg.data.num_workers
    shard = len(dataset) // world()[0]
    return DataLoader(
        dataset,
        batch_size=cfg.data.batch_size,
        sampler=make_sampler(dataset, train, cfg.run.seed),
        drop_last=train and shard > cfg.data.batch_size,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


class RunData(pl.LightningDataModule):
    """Builds the loaders once the process group exists, so each rank gets its shard."""

    def __init__(self, train_set: Dataset, val_set: Dataset, cfg: Config) -> None:
        super().__init__()
        self.train_set, self.val_set, self.cfg = train_set, val_set, cfg

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.train_set, self.cfg, True)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.val_set, self.cfg, False)
