"""Every view of a shard split once, as arrays: what landmark and grid code reads from test/train shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from datasets.shards.samples import decode_image, parse_sample
from datasets.shards.tar import iter_samples, read_shard


def split_views(
    shards_dir: Path | str, manifest: dict, split: str
) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Every view of a split once: names, uint8 images [N,H,W,3], landmarks [N,68,2], identities.
    ``shards_dir`` is a folder or URL prefix; each shard is checked against the manifest's sha256."""
    size = tuple(manifest["image_size"])
    names, images, lms, ids, seen = [], [], [], [], set()
    for shard in manifest["shards"]:
        if shard["split"] != split:
            continue
        for key, files in iter_samples(read_shard(shards_dir, shard)):
            sample = parse_sample(key, files)
            meta = json.loads(bytes(files["meta.json"]))
            for i, view in enumerate(sample.views):
                if view.name in seen:
                    continue
                seen.add(view.name)
                names.append(view.name)
                images.append(decode_image(view.jpeg, f"{shard['name']}:{key}.v{i}", size))
                lms.append(view.keypoints)
                ids.append(str(meta.get("identity", "")))
    if not names:
        raise ValueError(f"{shards_dir}: no {split} views")
    return names, np.stack(images), np.stack(lms).astype(np.float32), ids
