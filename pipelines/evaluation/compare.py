"""Another method's held-out outputs scored under this project's protocol, and this project's
outputs written under another method's names (docs/evaluation.md "Compare with published methods")."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from datasets import storage
from datasets.shards.tar import load_manifest
from pipelines.evaluation import naming
from pipelines.evaluation.generated import RESIZE, check_all
from pipelines.evaluation.generators import EvaluationError, generator_from_folder
from pipelines.evaluation.run import evaluate_generator
from pipelines.evaluation.scoring import test_pairs
from pipelines.runs import records

log = logging.getLogger(__name__)


def score_folder(
    cfg: Any,
    dataset: str,
    folder: Path,
    convention: str = "auto",
    resize: str = "none",
    show_progress: bool = False,
) -> dict:
    """The evaluation record of the images in ``folder`` as the method under test (``model``), beside
    both baselines and the held-out targets, with the same protocol (and protocol hash) as
    pipelines.evaluate's; ``generator`` says which folder, convention and resize policy.  Raises
    naming.FolderError or EvaluationError, each naming what is wrong."""
    spec = cfg.dataset(dataset)
    if spec.task != "pose":
        raise EvaluationError(
            f"{dataset}: a {spec.task} dataset; only pose-transfer outputs are scored from a folder"
        )
    if resize not in RESIZE:
        raise naming.FolderError(f"unknown resize policy {resize!r}; choose one of {', '.join(RESIZE)}")
    shards = storage.location(spec.shards)
    try:
        manifest = load_manifest(shards)
    except FileNotFoundError as exc:
        raise EvaluationError(str(exc)) from None
    size = (int(manifest["image_size"][0]), int(manifest["image_size"][1]))
    pairs = [(s, t) for s, t, _ in test_pairs(shards, manifest)]
    if not pairs:
        raise EvaluationError(f"{shards}: the test split has no pairs")
    if convention == "auto":
        conv, chosen = naming.detect(folder, pairs)
        log.info("%s", chosen)
    else:
        conv, chosen = naming.convention(convention), f"--convention {convention}"
    matched = naming.match(folder, pairs, conv)
    if matched.ignored:
        log.info(
            "%s: %d companion files of %s ignored (e.g. %s)",
            folder,
            len(matched.ignored),
            conv.method,
            matched.ignored[0].name,
        )
    files = [[s, t, str(matched.files[(s, t)])] for s, t in dict.fromkeys(pairs)]
    digest = check_all([Path(p) for _, _, p in files], conv, resize, size)
    generator = generator_from_folder(
        {
            "folder": str(folder),
            "convention": conv.name,
            "resize": resize,
            "size": list(size),
            "files": files,
            "images_sha256": digest,
        }
    )
    generator.info["convention_chosen"] = chosen
    generator.info["resize_policy"] = RESIZE[resize]
    result = evaluate_generator(cfg, dataset, generator, images_out=None, show_progress=show_progress)
    result.doc["seconds"] = round(time.time() - result.started, 1)
    return result.doc


def write_scores(doc: dict, out: Path) -> Path:
    """The folder's scores, numbers only, to ``out``; the whole record beside it
    (:func:`~pipelines.runs.records.protocol_path`); returns the record's path."""
    record = records.protocol_path(out)
    doc["metrics_file"] = str(out)
    records.EvaluationRecord.from_dict(doc).save(record)
    records.write_scores(out, records.numbers(doc["model"]))
    return record


def export_images(images_dir: Path, pairs: list[tuple[str, str]], convention: str, out: Path) -> int:
    """Copy the evaluation's ``<from>_2_<to>.png`` images to ``out`` under ``convention``'s names
    (as PNG: the copies score exactly as the originals); returns how many."""
    conv = naming.convention(convention)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*_2_*.png"):  # a previous export's files must not mix with this one's
        stale.unlink()
    own = naming.CONVENTIONS["attnflow"]
    for s, t in dict.fromkeys(pairs):
        shutil.copyfile(images_dir / own.format(s, t), out / conv.format(s, t, ".png"))
    return len(dict.fromkeys(pairs))
