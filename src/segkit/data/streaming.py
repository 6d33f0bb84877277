"""LitData chunks of any data set: ``segkit data optimize`` writes each split with LitData's
``optimize`` (images and masks as PNG bytes: uint8, losslessly compressed; labels as they
are), and ``--data litdata --data-root DIR`` (a folder or an object-store URI such as
``s3://bucket/prefix``) trains from them with LitData's ``StreamingDataset`` /
``StreamingDataLoader``: sharded across processes and nodes, its position in the epoch saved
in checkpoints, so a resumed run continues mid-epoch where it stopped.

``DIR/segkit.json`` holds the classes, the source and a version stamp that every split's
``segkit-split.json`` repeats; chunks from another optimisation are refused with one line.
LitData is the ``segkit[stream]`` extra.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segkit.data.base import DatasetInfo, SegmentationSource, Source
from segkit.errors import SegkitError
from segkit.viz import png_bytes

FORMAT = 1  # layout of segkit's chunks; a newer one is refused
META = "segkit.json"
SPLIT_META = "segkit-split.json"


def litdata_module() -> Any:
    """litdata, or one line naming the extra that installs it."""
    try:
        import litdata
    except ImportError:
        raise SegkitError("streaming data needs LitData: pip install 'segkit[stream]'") from None
    return litdata


def encode_sample(index: int, source: Source) -> dict[str, Any]:
    """Sample ``index`` of ``source`` as a chunk item: PNG bytes for pixels, plain values
    for labels."""
    sample = source[index]
    item: dict[str, Any] = {"name": str(sample.get("name", index)),
                            "image": png_bytes(sample["image"], compress_level=1)}
    if "mask" in sample:
        item["mask"] = png_bytes(sample["mask"], compress_level=1)
    if "label" in sample:
        item["label"] = int(sample["label"])
    if "labels" in sample:
        item["labels"] = np.asarray(sample["labels"], dtype=np.uint8)
    return item


def decode_item(item: dict[str, Any]) -> dict[str, Any]:
    """A chunk item back as the sample it was written from."""
    sample: dict[str, Any] = {"name": item["name"],
                              "image": np.array(Image.open(io.BytesIO(item["image"])))}
    if sample["image"].ndim == 2:
        sample["image"] = sample["image"][..., None]
    if "mask" in item:
        sample["mask"] = np.array(Image.open(io.BytesIO(item["mask"])))
    if "label" in item:
        sample["label"] = int(item["label"])
    if "labels" in item:
        sample["labels"] = np.asarray(item["labels"], dtype=np.float32)
    return sample


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts]) if "://" in root else str(Path(root, *parts))


def _read_json(path: str) -> dict[str, Any]:
    """A JSON file from a folder or an object store (fsspec opens remote URIs)."""
    try:
        if "://" in path:
            import fsspec

            with fsspec.open(path, "r") as f:
                return json.load(f)
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SegkitError(f"{path} is missing: not a folder written by `segkit data optimize`"
                          ) from None
    except (ImportError, ValueError) as exc:  # fsspec lacks the protocol's package
        raise SegkitError(f"{path}: cannot be read ({exc})") from None


def optimize_splits(sources: dict[str, Any], out: Path, origin: dict[str, Any],
                    workers: int = 1, chunk_bytes: str = "64MB",
                    shard: tuple[int, int] = (0, 1)) -> dict[str, Any]:
    """Write every split of ``sources`` as LitData chunks under ``out/SPLIT`` and the
    metadata beside them.

    Args:
        sources: split name -> map-style data set of numpy samples.
        out: the folder to write (a split already there is overwritten).
        origin: where the data came from (data set name and root), kept in segkit.json.
        workers: LitData's optimisation processes.
        chunk_bytes: size of each chunk file.
        shard: (I, N): write only samples I, I + N, I + 2N, ... (one machine's share of a
            data set optimised on N machines; ``merge_chunks`` joins the shards).

    Returns:
        The metadata written to ``out/segkit.json``.
    """
    litdata = litdata_module()
    first = next(iter(sources.values()))
    index, count = shard
    if not 0 <= index < count:
        raise SegkitError(f"--shard {index}/{count}: the shard must be 0 to {count - 1}")
    chosen = {split: list(range(index, len(src), count)) for split, src in sources.items()}
    stamp = hashlib.sha256(json.dumps(
        [first.info.to_dict(), {s: len(src) for s, src in sources.items()}, shard],
        sort_keys=True).encode())
    meta = {"format": FORMAT, "version": stamp.hexdigest()[:16], "info": first.info.to_dict(),
            "source": origin, "splits": {s: len(ids) for s, ids in chosen.items()},
            "shard": list(shard)}
    out.mkdir(parents=True, exist_ok=True)
    for split, source in sources.items():
        if not chosen[split]:
            raise SegkitError(f"split '{split}' has no sample in shard {index}/{count}")
        litdata.optimize(fn=partial(encode_sample, source=source), inputs=chosen[split],
                         output_dir=str(out / split), chunk_bytes=chunk_bytes,
                         num_workers=max(1, min(workers, len(chosen[split]))), mode="overwrite",
                         start_method="fork" if os.name == "posix" else None,
                         verbose=False)
        _write_split_meta(out / split, meta["version"], split, len(chosen[split]))
    (out / META).write_text(json.dumps(meta, indent=2))
    return meta


def _write_split_meta(folder: Path, version: str, split: str, count: int) -> None:
    (folder / SPLIT_META).write_text(json.dumps({"version": version, "split": split,
                                                 "count": count}))


def merge_chunks(parts: list[Path], out: Path) -> dict[str, Any]:
    """Join chunk folders written by several machines (``optimize_splits`` shards) into one
    with LitData's ``merge_datasets``; they must hold the same classes and splits."""
    litdata = litdata_module()
    if len(parts) < 2:
        raise SegkitError("give two or more chunk folders to merge")
    shards: list[Any] = []
    for part in parts:
        meta = _read_json(_join(str(part), META))
        for split in meta["splits"]:
            read_meta(str(part), split)  # a known format, every split of this optimisation
        if shards and (meta["info"] != shards[0]["info"]
                       or set(meta["splits"]) != set(shards[0]["splits"])):
            raise SegkitError(f"{part}: other classes or splits than {parts[0]}; merge "
                              "shards of one data set only")
        shards.append(meta)
    first = shards[0]
    version = hashlib.sha256("".join(m["version"] for m in shards).encode()).hexdigest()[:16]
    counts = {split: sum(m["splits"][split] for m in shards) for split in first["splits"]}
    out.mkdir(parents=True, exist_ok=True)
    for split in first["splits"]:
        litdata.merge_datasets([str(part / split) for part in parts], str(out / split))
        _write_split_meta(out / split, version, split, counts[split])
    meta = {**first, "version": version, "splits": counts, "shard": [0, 1],
            "merged": [str(p) for p in parts]}
    (out / META).write_text(json.dumps(meta, indent=2))
    return meta


def read_meta(root: str, split: str) -> dict[str, Any]:
    """The data set's metadata, checked against the split's (same optimisation, known
    format)."""
    meta = _read_json(_join(root, META))
    if int(meta.get("format", 0)) > FORMAT:
        raise SegkitError(f"{_join(root, META)}: chunk format {meta['format']} is newer than "
                          f"this segkit reads ({FORMAT}); upgrade segkit")
    if split not in meta.get("splits", {}):
        raise SegkitError(f"{root}: no split '{split}' (has {', '.join(meta['splits'])}); "
                          f"optimize it with segkit data optimize --splits {split}")
    split_meta = _read_json(_join(root, split, SPLIT_META))
    if split_meta.get("version") != meta["version"]:
        raise SegkitError(f"{_join(root, split)}: chunks of another version of the data set "
                          f"({split_meta.get('version')}, {META} says {meta['version']}); "
                          "write every split again with segkit data optimize")
    return meta


class StreamingSource(SegmentationSource):
    """One split of a LitData chunk folder, read by index (validation, fingerprint) or
    streamed for training (``streaming_set``).

    Args:
        root: the folder or object-store URI ``segkit data optimize`` wrote.
        split: ``train`` or ``val``.
        seed: the shuffle of the streamed training order (by epoch).
    """

    def __init__(self, root: str, split: str, seed: int = 0) -> None:
        litdata = litdata_module()
        self.root, self.split, self.seed = root, split, seed
        self.meta = read_meta(root, split)
        self.info = DatasetInfo.from_dict(self.meta["info"])
        self.dataset = litdata.StreamingDataset(_join(root, split))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return decode_item(self.dataset[index])

    def streaming_set(self, transform: Any) -> StreamingTrainSet:
        """The training stream: shuffled by (seed, epoch), decoded and augmented by
        ``transform`` (a ``segkit.data.transforms.Augmented``) as items arrive."""
        return StreamingTrainSet(self, transform)


class StreamingTrainSet:
    """A shuffled ``StreamingDataset`` of a split whose items come out as training tensors;
    ``streaming_loader`` gives the ``StreamingDataLoader`` Lightning checkpoints. The stream
    is opened when the loader is asked for, inside each training process, so LitData sees
    the process group and gives every rank an equal share."""

    def __init__(self, source: StreamingSource, augment: Any) -> None:
        self.source, self.augment, self.info = source, augment, source.info

    def __len__(self) -> int:
        return len(self.source)

    def streaming_loader(self, batch_size: int, workers: int) -> Any:
        """LitData's loader: shards by rank and worker, and has ``state_dict`` /
        ``load_state_dict``, which Lightning saves in checkpoints and restores on resume."""
        litdata = litdata_module()
        dataset = litdata.StreamingDataset(
            _join(self.source.root, self.source.split), shuffle=True, seed=self.source.seed,
            drop_last=True, transform=partial(_to_training_sample, augment=self.augment))
        return litdata.StreamingDataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                           drop_last=True)


def _to_training_sample(item: dict[str, Any], augment: Any) -> dict[str, Any]:
    return augment.apply(decode_item(item))
