"""``predict(run, inputs)``: predictions for any number of image files of any size, in one
process or many (Lightning's ``trainer.predict`` with a prediction writer), resumable.

Inputs are files, folders, glob patterns or text files listing paths, streamed: each process
takes every N-th input and decodes it in the loader as it goes, none is held ahead. Every
output is written whole or not at all (segmentation: palette mask + overlay per image, or RLE
JSON lines; recognition: ``predictions.csv`` / ``.json`` merged from per-process JSON lines),
so re-running the same command, or ``resume``, skips the inputs already done. An unreadable or
missing input is counted in ``skipped.txt`` and the job goes on (``on_bad_image="fail"``
stops it instead).
"""

from __future__ import annotations

import glob
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from segkit.checkpoint_io import write_atomic
from segkit.data.io import IMAGE_SUFFIXES, read_image
from segkit.engine.backends import checkpoint_stamp, load_predictor
from segkit.engine.inference import InferenceOptions, Predictor
from segkit.errors import SegkitError
from segkit.jsonl_shards import ShardedLines

LIST_SUFFIXES = (".txt", ".lst", ".list")  # a text file of image paths, one per line
MANIFEST = ".segkit-predict.json"  # what made the outputs (another model or setting redoes them)


def listed_paths(list_file: Path) -> Iterator[Path]:
    """The paths a text file lists, one per line (blank lines and ``#`` comments skipped;
    relative paths are relative to the list file's folder), read as they are needed."""
    with open(list_file, encoding="utf-8") as f:
        for line in f:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                path = Path(entry)
                yield path if path.is_absolute() else list_file.parent / path


def iter_inputs(inputs: list[str | Path]) -> Iterator[Path]:
    """Image paths from files, folders (their images, sorted), glob patterns (sorted) and
    text files listing paths (streamed; a listed path that is missing is still yielded, to
    be counted as skipped)."""
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            yield from sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            yield from listed_paths(p) if p.suffix.lower() in LIST_SUFFIXES else [p]
        else:
            matches = sorted(Path(m) for m in glob.glob(str(item)))
            if not matches:
                raise SegkitError(f"no such input file, folder or pattern: {item}")
            yield from (m for m in matches if m.is_file())


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files, folders (their images) and glob patterns -> sorted unique image paths."""
    return list(dict.fromkeys(iter_inputs(inputs)))


class InputStream(IterableDataset):
    """This process's share of the inputs (every ``world``-th from ``rank``, split again
    between loader workers), minus those already done, decoded one at a time."""

    def __init__(self, inputs: list[str | Path]) -> None:
        self.inputs = inputs
        self.rank, self.world = 0, 1
        self.is_done: Callable[[Path], bool] = lambda path: False
        self.windowed: Callable[[Path], bool] = lambda path: False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        stride, slot = self.world * workers, self.rank * workers + worker_id
        for index, path in enumerate(iter_inputs(self.inputs)):
            if index % stride != slot or self.is_done(path):
                continue
            if self.windowed(path):  # read window by window by the writer's process
                yield {"index": index, "path": str(path), "raster": True}
                continue
            try:
                image = read_image(path)
            except (SegkitError, OSError, ValueError) as exc:
                reason = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
                yield {"index": index, "path": str(path), "error": reason}
                continue
            yield {"index": index, "path": str(path), "image": image}


def _one_item(item: Any) -> Any:
    return item  # the loader hands over each input as it is: images differ in size


class PredictionModule(pl.LightningModule):
    """A loaded predictor (any backend) as Lightning's ``trainer.predict`` runs it: the
    network (when PyTorch runs it) is a submodule, so Lightning puts it on each process's
    device."""

    def __init__(self, predictor: Predictor) -> None:
        super().__init__()
        self.predictor = predictor
        self.network = getattr(predictor, "module", None)

    def on_predict_start(self) -> None:
        if self.network is not None:
            self.predictor.device = self.device

    def predict_step(self, item: dict[str, Any], batch_idx: int = 0) -> dict[str, Any]:
        if "error" in item or "raster" in item:
            return item
        _, probs = self.predictor.predict_array(item["image"])
        return {**item, "probs": probs}


@dataclass
class PredictionJob:
    """What one ``segkit predict`` does, in every process of the job.

    Attributes:
        predictor: the loaded model (any backend).
        out: the output folder.
        fmt: ``default`` or another format of the task's writer.
        save_probs: segmentation: also write uint8 probabilities.
        tolerance: polygon simplification of pre-annotation formats.
        on_bad_image: ``skip`` (log to skipped.txt and go on) or ``fail``.
        overwrite: predict every input again, even those already done.
    """

    predictor: Predictor
    out: Path
    fmt: str = "default"
    save_probs: bool = False
    tolerance: float = 0.0
    on_bad_image: str = "skip"
    overwrite: bool = False
    stats: dict[str, int] = field(default_factory=lambda: {"written": 0, "skipped": 0})
    world: int = 1

    def describe(self, writer: Any) -> str:
        """What the job did, for the CLI: the writer's own line in one process, else the
        totals of every process."""
        if self.world == 1:
            return writer.describe()
        return (f"{self.world} processes wrote the outputs of {self.stats['written']} inputs "
                f"to {self.out}")

    def writer(self, rank: int = 0) -> Any:
        """The task's writer of this job's outputs for process ``rank``."""
        return self.predictor.outputs.writer(self.out, self.save_probs, self.fmt,
                                             self.tolerance, rank)

    def manifest(self) -> dict[str, Any]:
        """What the outputs depend on."""
        p = self.predictor
        source = Path(p.source) if p.source else None
        stamp = checkpoint_stamp(source) if source is not None and source.is_file() else None
        return {"model": str(p.source), "stamp": stamp, "format": self.fmt,
                "save_probs": self.save_probs,
                "options": p.options.describe(), "threshold": p.options.threshold,
                "class_thresholds": p.options.class_thresholds, "top_k": p.options.top_k}

    def resumable(self) -> bool:
        """Whether outputs already in ``out`` came from this model and these settings."""
        path = self.out / MANIFEST
        if self.overwrite or not path.is_file():
            return not self.overwrite
        try:
            same = json.loads(path.read_text()) == json.loads(json.dumps(self.manifest()))
        except ValueError:
            same = False
        if not same:
            logging.getLogger("segkit").warning(
                "%s holds predictions of another model or setting: predicting every input "
                "again", self.out)
        return same


class PredictionFiles(BasePredictionWriter):
    """Lightning's prediction writer: each process writes its inputs' outputs as they come
    (no gather of all predictions in one process), logs bad inputs, and reports progress to
    the first process, which shows the job's merged rate and ETA."""

    def __init__(self, job: PredictionJob, stream: InputStream, progress: bool) -> None:
        super().__init__(write_interval="batch")
        self.job, self.stream, self.show = job, stream, progress
        self.writer: Any = None
        self.count, self.last_report = 0, 0.0
        self.bar: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        rank, world = trainer.global_rank, trainer.world_size
        resumable = self.job.resumable()
        self.writer = self.job.writer(rank)
        if world > 1 and not self.writer.streaming:
            raise SegkitError(f"--format {self.job.fmt} writes one file set in one process; "
                              "run it without --devices / --num-nodes")
        self.stream.rank, self.stream.world = rank, world
        self.stream.is_done = self.writer.is_done if resumable else (lambda path: False)
        if self.job.predictor.kind.spatial:
            from segkit.data.rasters import needs_windows

            limit = self.job.predictor.options.max_pixels
            self.stream.windowed = lambda path: needs_windows(path, limit)
        self.skipped = ShardedLines(self.job.out, "skipped", rank)
        if trainer.is_global_zero:  # files a killed job was writing: never complete
            for tmp in self.job.out.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        self.progress_dir = self.job.out / ".progress"
        self.progress_dir.mkdir(parents=True, exist_ok=True)
        self._report(force=True)
        trainer.strategy.barrier("segkit-predict-setup")  # every process read the manifest
        if trainer.is_global_zero:
            write_atomic(self.job.out / MANIFEST, json.dumps(self.job.manifest(), indent=2))
            total = done = 0
            for path in iter_inputs(self.stream.inputs):
                total += 1
                done += resumable and self.writer.is_done(path)
            if done:
                print(f"{done} of {total} inputs already done in {self.job.out}: skipped")
            if self.show:
                self.bar = tqdm(total=total - done, desc="predict", unit="img")

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_report < 1.0:
            return
        self.last_report = now
        write_atomic(self.progress_dir / f"rank{self.stream.rank}", json.dumps(self.job.stats))
        if self.bar is not None:
            total = self.merged_stats()
            self.bar.update(max(0, total["written"] + total["skipped"] - self.bar.n))

    def merged_stats(self) -> dict[str, int]:
        """Inputs written and skipped by every process so far (from their progress files)."""
        total = {"written": 0, "skipped": 0}
        for r in range(self.stream.world):
            try:
                stats = json.loads((self.progress_dir / f"rank{r}").read_text())
            except (OSError, ValueError):
                continue
            for key in total:
                total[key] += int(stats.get(key, 0))
        return total

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           prediction: Any, batch_indices: Any, batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        path = Path(prediction["path"])
        if "error" in prediction:
            if self.job.on_bad_image == "fail":
                raise SegkitError(f"{prediction['error']} (--on-bad-image skip logs such "
                                  "inputs to skipped.txt and goes on)")
            self.skipped.append({"index": prediction["index"], "key": str(path),
                                 "reason": prediction["error"]})
            self.job.stats["skipped"] += 1
        elif "raster" in prediction:
            from segkit.engine.raster_predict import predict_raster

            files: Any = getattr(self.writer, "files", lambda p: {})
            target = files(path).get("raster")
            if target is None:
                raise SegkitError(f"{path}: --format {self.job.fmt} takes whole images; "
                                  "rasters are predicted to GeoTIFF masks by the default format")
            self.writer.record({"raster": predict_raster(self.job.predictor, path, target)})
            self.job.stats["written"] += 1
        else:
            self.writer.add(path, prediction["image"], prediction["probs"], prediction["index"])
            self.job.stats["written"] += 1
        self.count += 1
        self._report()

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.writer.close()
        self.skipped.close()
        self._report(force=True)

    def finish(self, trainer: pl.Trainer) -> None:
        """After every process closed its files: the first merges shards and skip logs."""
        trainer.strategy.barrier("segkit-predict-end")
        if not trainer.is_global_zero:
            return
        self._report(force=True)
        self.job.stats = self.merged_stats()
        if self.bar is not None:
            self.bar.close()
        self.writer.merge()
        fresh = self.job.writer(0)
        self.skipped.merge()
        still_bad = [r for r in self.skipped.merged() if not fresh.is_done(Path(r["key"]))]
        self.skipped.merged_path.unlink(missing_ok=True)
        skipped_txt = self.job.out / "skipped.txt"
        if still_bad:
            write_atomic(skipped_txt, "".join(f"{r['key']}\t{r['reason']}\n" for r in still_bad))
        else:
            skipped_txt.unlink(missing_ok=True)
        for f in self.progress_dir.glob("rank*"):
            f.unlink(missing_ok=True)
        self.progress_dir.rmdir()


def _accelerator(predictor: Predictor) -> str:
    if getattr(predictor, "module", None) is None:
        return "cpu"  # ONNX Runtime / OpenVINO / TorchScript place themselves
    return "gpu" if predictor.device.type == "cuda" else "cpu"


def run_prediction(job: PredictionJob, inputs: list[str | Path], devices: int | str = 1,
                   num_nodes: int = 1, strategy: str = "auto", workers: int = 0,
                   progress: bool = True) -> Any:
    """Run ``job`` over ``inputs`` on ``devices`` processes per node (DDP launches the
    others, as in training) and return this process's writer (``results``, ``describe()``;
    ``job.stats`` counts written and skipped inputs)."""
    job.out.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", message=".*infer the batch indices.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    stream = InputStream(inputs)
    files = PredictionFiles(job, stream, progress)
    many = num_nodes > 1 or devices not in (1, "1")
    trainer = pl.Trainer(
        accelerator=_accelerator(job.predictor), devices=devices, num_nodes=num_nodes,
        strategy=("ddp" if many else "auto") if strategy == "auto" else strategy,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[files],
    )
    loader = DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_one_item,
                        persistent_workers=False)
    trainer.predict(PredictionModule(job.predictor), dataloaders=loader,
                    return_predictions=False)
    files.finish(trainer)
    job.world = trainer.world_size
    return files.writer


def predict(
    run: str | Path | None,
    inputs: list[str | Path],
    out: str | Path,
    options: InferenceOptions | None = None,
    device: str = "cpu",
    save_probs: bool = False,
    predictor: Predictor | None = None,
    progress: bool = True,
    backend: str = "auto",
) -> list[Any]:
    """Predict every input image and write the task's outputs to ``out``.

    Args:
        run: run directory, checkpoint or exported file (ignored when ``predictor`` is given).
        inputs: image files, folders, glob patterns and text files listing paths.
        out: output folder (created).
        options: TTA, windows, threshold and top-k.
        device: where a checkpoint runs.
        save_probs: segmentation: also write per-class probabilities (``_probs.npz``).
        predictor: an already loaded predictor (any backend).
        progress: show a progress bar.
        backend: ``auto``, ``torch``, ``onnxruntime`` or ``openvino`` (see
            ``segkit.engine.backends``).

    Returns:
        Segmentation: one dict of written paths per image predicted now; recognition: one row
        per image (``image`` and its ``labels`` as (label, score) pairs).

    Raises:
        SegkitError: no such input, unreadable image or model.
    """
    if predictor is None:
        if run is None:
            raise SegkitError("give a run directory / checkpoint, or an .onnx file")
        predictor = load_predictor(run, device, options, backend)
    return predict_with(predictor, inputs, out, save_probs, progress).results


def predict_with(predictor: Predictor, inputs: list[str | Path], out: str | Path,
                 save_probs: bool = False, progress: bool = True, fmt: str = "default",
                 tolerance: float = 0.0, **job: Any) -> Any:
    """Like ``predict`` with a loaded predictor; returns the task's finished writer
    (``results`` and ``describe()``). ``fmt``: another output format of the task
    (segmentation: rle, labelme, cvat, labelstudio, coco); ``job``: ``on_bad_image``,
    ``overwrite``, and ``run_prediction``'s ``devices``, ``num_nodes``, ``strategy``,
    ``workers``."""
    spread = {k: job.pop(k) for k in ("devices", "num_nodes", "strategy", "workers")
              if k in job}
    the_job = PredictionJob(predictor, Path(out), fmt, save_probs, tolerance, **job)
    writer = run_prediction(the_job, inputs, progress=progress, **spread)
    writer.job = the_job
    return writer


__all__ = ["expand_inputs", "iter_inputs", "predict", "predict_with", "run_prediction"]
