"""Stage ``prepare``: an official release (or a folder of your own photos) → the layout preprocess reads.

    python -m pipelines.prepare --dataset deepfashion --from DIR [--workers N] [--out DIR]
    python -m pipelines.prepare --dataset market --from DIR
    python -m pipelines.prepare --dataset NAME --photos DIR [--contact PNG]

``--from``: the release as downloaded (docs/data.md "Real data"): the image tree, the split lists,
the field's annotation and pair CSVs.  Images are flattened to the field's names and brought to
the annotation frame (``datasets.<name>.source_size``) by ``prepare.<name>.fit``; the layout is
written to ``datasets.<name>.root`` (or ``--out``) atomically, with ``prepare-rejects.csv`` (every
image, list entry, row or pair that did not make it, with its reason) and
``prepare-manifest.json``; the counts also go to ``metrics/prepare/<name>.json``.  ``--workers N``
converts on N Ray tasks; the output is byte-identical for any N.

``--photos``: one folder per identity of any photos (JPEG/PNG/WebP, EXIF orientation honoured);
the person is found with the pose extra (MediaPipe → OpenPose-18), cropped/padded to the
dataset's frame, and photos with no person, several people or too few joints are quarantined with
the detector's confidence.  A contact sheet with skeletons goes to
``reports/figures/<name>-photos.png``.

Exit status: 0 ok; 1 nothing could be written (every image rejected); 2 bad config, an unknown
dataset, or a release/photo folder missing a part (the message lists the names looked for).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from datasets.files import atomic_write_bytes
from datasets.raw.frame import FitPolicy
from datasets.raw.release_writer import (
    MANIFEST_FILE,
    REJECTS_FILE,
    PrepareError,
    canonical_json,
    write_release,
)
from datasets.raw.releases import ReleaseError, plan_release
from datasets.specs import PrepareSpec
from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.config.params import add_config_args, config_from_args

log = logging.getLogger("prepare")


def _fail(message: str, code: int = 2) -> None:
    log.error("%s", message)
    raise SystemExit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, help="a dataset named in params.yaml datasets")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from", dest="release", metavar="DIR", help="the official release folder, as downloaded"
    )
    source.add_argument("--photos", metavar="DIR", help="a folder with one sub-folder of photos per identity")
    parser.add_argument("--out", default=None, help="output folder (default: the dataset's root)")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Ray tasks converting images at once (0: in this process; default 0)",
    )
    parser.add_argument(
        "--metrics", default=None, help="counts JSON (default: metrics/prepare/<dataset>.json)"
    )
    parser.add_argument(
        "--contact",
        default=None,
        help="--photos contact sheet PNG (default: reports/figures/<dataset>-photos.png)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_args(parser)
    add_log_level_arg(parser)
    return parser


def _summary_line(name: str, manifest: dict, seconds: float) -> str:
    images = manifest["images"]
    written = sum(images["written"].values())
    per_k = 1000.0 * seconds / max(images["found"], 1)
    pairs = ", ".join(f"{s} {c['written']}/{c['in']}" for s, c in manifest["pairs"].items())
    return (
        f"{name}: {images['found']} images found = {written} written "
        f"({', '.join(f'{s} {n}' for s, n in images['written'].items())}) + {images['rejected']} rejected; "
        f"pairs written/in: {pairs}; {seconds:.1f} s ({per_k:.1f} s per 1,000 images)"
    )


def run_release(
    args: argparse.Namespace, name: str, spec: PrepareSpec, frame: tuple[int, int], layout: str, out: Path
) -> dict:
    try:
        plan = plan_release(layout, args.release, spec.include_query)
    except ReleaseError as exc:
        _fail(str(exc))
    policy = FitPolicy(frame, spec.fit, spec.aspect_tolerance, spec.jpeg_quality)
    try:
        return write_release(
            plan,
            out,
            policy,
            workers=args.workers,
            chunk_size=spec.chunk_size,
            progress=not args.no_progress,
            desc=f"prepare {name}",
        )
    except PrepareError as exc:
        _fail(str(exc))
    raise AssertionError("unreachable")


def run_photos(
    args: argparse.Namespace, name: str, spec: PrepareSpec, frame: tuple[int, int], layout: str, out: Path
) -> dict:
    from functools import partial

    from tqdm import tqdm

    from datasets.raw.photos import sheet_rows, write_photo_dataset
    from datasets.sheets.pose_sheet import pose_sheet, save_png
    from pipelines.apps.pose_extract import INSTALL_HINT, detect_people, pose_extra_available

    if not Path(args.photos).is_dir():
        _fail(f"{args.photos}: photo folder not found")
    if not pose_extra_available():
        _fail(
            f"--photos finds people with the pose extra (mediapipe), which is not installed: {INSTALL_HINT}"
        )
    if args.workers:
        log.warning("--workers applies to --from; photos are searched in this process")
    detect = partial(detect_people, max_people=2, min_detection_confidence=spec.photos.min_confidence)
    total = sum(1 for p in Path(args.photos).rglob("*") if p.is_file())
    bar = tqdm(
        total=total, unit="photo", desc=f"prepare {name}", disable=args.no_progress or None, file=sys.stderr
    )
    try:
        manifest, results = write_photo_dataset(
            args.photos,
            out,
            detect,
            layout,
            frame,
            spec.photos,
            spec.jpeg_quality,
            on_photo=lambda _r: bar.update(1),
        )
    except PrepareError as exc:
        _fail(str(exc))
    finally:
        bar.close()
    for r in results:
        if r.reason:
            log.warning("%s: quarantined %s: %s", name, r.photo.source, r.reason)
    rows = sheet_rows(args.photos, results, frame)
    if rows:
        sheet = Path(args.contact or f"reports/figures/{name}-photos.png")
        save_png(sheet, pose_sheet(rows, scale=1 if frame[0] >= 200 else 2))
        log.info("%s: contact sheet -> %s", name, sheet)
    return manifest


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, "prepare")
    cfg = config_from_args(args)
    name = args.dataset
    if name not in cfg.datasets:
        _fail(f"unknown dataset {name!r}; params.yaml datasets: {', '.join(sorted(cfg.datasets))}")
    dataset = cfg.dataset(name)
    if args.workers < 0:
        _fail(f"--workers must be >= 0, got {args.workers}")
    if dataset.layout not in ("deepfashion", "market"):
        _fail(
            f"dataset {name!r} has layout {dataset.layout!r}; prepare writes the deepfashion and market "
            "layouts (portrait sets: python -m pipelines.convert_portraits)"
        )
    spec = cfg.prepare.get(name, PrepareSpec())
    out = Path(args.out or dataset.root)
    frame = tuple(dataset.source_size)
    start = time.perf_counter()
    if args.release is not None:
        if not Path(args.release).is_dir():
            _fail(f"{args.release}: release folder not found")
        manifest = run_release(args, name, spec, frame, dataset.layout, out)
    else:
        manifest = run_photos(args, name, spec, frame, dataset.layout, out)
    seconds = time.perf_counter() - start
    metrics = Path(args.metrics or f"metrics/prepare/{name}.json")
    atomic_write_bytes(metrics, canonical_json({"images": manifest["images"], "pairs": manifest["pairs"]}))
    log.info("%s", _summary_line(name, manifest, seconds))
    log.info(
        "%s: layout -> %s (rejects: %s, manifest: %s)", name, out, out / REJECTS_FILE, out / MANIFEST_FILE
    )
    if sum(manifest["images"]["written"].values()) == 0:
        _fail("no image could be prepared; the reasons are in the rejects file", 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
