"""Pose transfer on any photo: ``python -m pipelines.infer`` and the same as a Python API.

    python -m pipelines.infer --model models:/attnflow-pose@champion \\
        --source person.jpg --target-pose pose.json --out out.png
    python -m pipelines.infer --model models:/attnflow-pose@champion \\
        --source person.jpg --target-pose other_person.jpg --out out.png --sheet sheet.png
    python -m pipelines.infer --model models:/attnflow-pose@champion \\
        --pairs pairs.csv --images DIR --annotations annotation.csv --out OUT_DIR   # batch

POSE is a keypoint JSON (``[[x, y], ...]`` or ``{"keypoints": [[x, y], ...], "size": [H, W]}``), a
row of an annotation CSV in the field's format (``annotation.csv#IMAGE_NAME``; the ``:``-separated
``name:keypoints_y:keypoints_x``), or another photo.  Keypoints of a photo come from the pose extra
(mediapipe, ``make setup-pose``); a source photo needs them too unless ``--source-pose`` is given.

Photos of any size are centre-cropped to the model's aspect ratio and resized to its input size;
keypoints go through the same transform.  Python::

    from pipelines.apps.pose_transfer import PoseTransfer
    pt = PoseTransfer.load("models:/attnflow-pose@champion")
    image = pt.transfer(source_rgb, target_keypoints, target_frame=(H, W))  # uint8 [h, w, 3]
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from pipelines.apps.inputs import InputError, read_image, save_rgb
from pipelines.apps.pose_extract import PoseExtraMissing
from pipelines.apps.pose_transfer import Fit, PoseTransfer, photo_keypoints, resolve_pose, run_batch
from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.tracking.redact import redact

log = logging.getLogger("infer")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m pipelines.infer",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--model",
        default="models:/attnflow-pose@champion",
        help="MLflow model URI, local model folder or checkpoint folder "
        "(default: models:/attnflow-pose@champion)",
    )
    ap.add_argument("--source", help="photo of the person")
    ap.add_argument(
        "--source-pose", help="keypoints of the source photo (else extracted with the pose extra)"
    )
    ap.add_argument("--target-pose", help="keypoint JSON, annotation.csv#NAME, or a photo")
    ap.add_argument(
        "--pose-frame",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="frame of CSV/JSON keypoints when the file does not say (default: the source photo's "
        "size for --source-pose, the model's input size for --target-pose)",
    )
    ap.add_argument("--out", required=True, help="output PNG (single) or folder (batch)")
    ap.add_argument("--sheet", help="also write source | target pose | output side by side")
    ap.add_argument("--pairs", type=Path, help="batch mode: pairs CSV with columns from,to")
    ap.add_argument("--images", type=Path, help="batch mode: folder of the source images")
    ap.add_argument(
        "--annotations", type=Path, help="batch mode: annotation CSV (name:keypoints_y:keypoints_x)"
    )
    add_log_level_arg(ap)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, "infer")
    try:
        batch = args.pairs is not None
        if batch and (args.images is None or args.annotations is None):
            raise InputError("batch mode needs --pairs, --images and --annotations")
        if not batch and (args.source is None or args.target_pose is None):
            raise InputError("give --source and --target-pose (or --pairs for batch mode)")
        frame = (args.pose_frame[0], args.pose_frame[1]) if args.pose_frame else None
        if not batch:
            # Check the user's files before the (slower) model load.
            source = read_image(args.source)
            tgt_kp, tgt_frame = resolve_pose(args.target_pose, frame)
            if args.source_pose is None:
                src_kp = photo_keypoints(source, args.source)
            else:
                size = (source.shape[0], source.shape[1])
                src_kp, src_frame = resolve_pose(args.source_pose, frame or size)
                if src_frame is not None and tuple(src_frame) != size:
                    src_kp = Fit(0, 0, size[1] / src_frame[1], size[0] / src_frame[0]).keypoints(src_kp, size)
        pt = PoseTransfer.load(args.model)
        if batch:
            written = run_batch(pt, args.pairs, args.images, args.annotations, Path(args.out), frame)
            print(f"wrote {len(written)} images to {args.out}")
            return 0
        out = pt.transfer(source, tgt_kp, tgt_frame, src_kp)
        print(f"wrote {save_rgb(args.out, out)}")
        if args.sheet:
            print(f"wrote {save_rgb(args.sheet, pt.sheet(source, tgt_kp, tgt_frame, src_kp))}")
        return 0
    except (InputError, PoseExtraMissing) as exc:
        log.error("%s", redact(str(exc)))
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
