"""Portrait editing: move a face's 68 landmarks with the edit model, render the face that follows.

    python -m pipelines.edit_portrait --model models:/attnflow-portrait@champion --image face.jpg \\
        [--landmarks FILE|auto] [--rotate DEG] [--shift DX DY] [--mouth-open A] [--smile A] \\
        [--eyes-closed A] [--brows A] [--drive OTHER_FACE [--drive-landmarks FILE|auto]] \\
        [--sweep EDIT] [--crop auto|face|none] [--scale N] --out OUT.png

``--model`` is an MLflow model URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/…``),
a local MLflow model folder, or a training checkpoint folder (``runs/<run>/checkpoints`` for its
newest committed checkpoint, or one ``step-NNNNNNNNN`` folder; its EMA generator is used).

Landmarks (``--landmarks``): ``auto`` (default) runs MediaPipe Face Mesh (the pose extra) and maps
its 468 points to the 68 iBUG points (pipelines/apps/face_mesh.py); a file is a JSON list of 68
``[x, y]`` (or ``{"landmarks": [...], "size": [H, W]}``), an iBUG ``.pts`` file, or a row of a
portrait landmark CSV (``portrait-landmarks-test.csv#NAME``, ``name:landmarks_y:landmarks_x``).
-1 marks a missing point.

Framing: an image already at the model's size is used as it is (``--crop auto``); any other photo
is cut to a square around its landmarks framed like the training faces (:data:`FACE_SCALE`,
:data:`FACE_CENTRE`, measured on the synthetic set) and resized to the model's size.

Edits (docs/portrait.md, datasets/faces/edits.py) are applied in this order: ``--drive`` (the
other face's expression and head pose on this face's geometry), then brows, eyes-closed, smile,
mouth-open, then rotate, then shift.  Ranges: rotate [-45, 45] degrees, the four expression
strengths [-1, 1], shift within half the model's frame.  ``--sweep EDIT`` writes one row of that
edit at several strengths (on top of the other edits) instead of a single image.

Python::

    from pipelines.apps.portrait_editor import Edits, PortraitEditor
    editor = PortraitEditor.load("models:/attnflow-portrait@champion")
    face = editor.prepare(rgb)                      # landmarks from the face mesh
    out = editor.edit(face, Edits(smile=0.8, rotate=10))   # uint8 [h, w, 3]

Exit status: 0 written, 2 a bad input (each error names the file or option and the reason).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import replace

from datasets.sheets.cells import enlarge
from pipelines.apps.inputs import InputError, save_rgb
from pipelines.apps.portrait_editor import SWEEPS, Edits, PortraitEditor, face_input, sweep_sheet
from pipelines.apps.pose_extract import PoseExtraMissing
from pipelines.config.logs import add_log_level_arg, setup_logging

log = logging.getLogger("edit_portrait")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m pipelines.edit_portrait",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--model",
        default="models:/attnflow-portrait@champion",
        help="MLflow model URI, local model folder or checkpoint folder "
        "(default: models:/attnflow-portrait@champion)",
    )
    ap.add_argument("--image", required=True, help="the face to edit")
    ap.add_argument(
        "--landmarks",
        default="auto",
        help="68 landmarks of --image: auto (face mesh, default), FILE.json, FILE.pts or FILE.csv#NAME",
    )
    ap.add_argument("--rotate", type=float, default=0.0, metavar="DEG", help="in-plane rotation, [-45, 45]")
    ap.add_argument(
        "--shift",
        type=float,
        nargs=2,
        default=(0.0, 0.0),
        metavar=("DX", "DY"),
        help="translation in pixels of the model's frame",
    )
    ap.add_argument("--mouth-open", type=float, default=0.0, metavar="A", help="[-1, 1]; < 0 closes")
    ap.add_argument("--smile", type=float, default=0.0, metavar="A", help="[-1, 1]; < 0 frowns")
    ap.add_argument("--eyes-closed", type=float, default=0.0, metavar="A", help="[-1, 1]; < 0 widens")
    ap.add_argument("--brows", type=float, default=0.0, metavar="A", help="[-1, 1]; < 0 frowns")
    ap.add_argument("--drive", help="another face: its expression and head pose drive this one")
    ap.add_argument("--drive-landmarks", default="auto", help="landmarks of --drive (as --landmarks)")
    ap.add_argument("--sweep", choices=sorted(SWEEPS), help="write a row of this edit at several strengths")
    ap.add_argument(
        "--crop",
        choices=("auto", "face", "none"),
        default="auto",
        help="auto: frame the face unless the image already has the model's size",
    )
    ap.add_argument("--scale", type=int, default=1, help="enlarge the written image N times (nearest)")
    ap.add_argument("--out", required=True, help="output PNG")
    add_log_level_arg(ap)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, "edit_portrait")
    try:
        edits = Edits(
            rotate=args.rotate,
            shift=tuple(args.shift),
            mouth_open=args.mouth_open,
            smile=args.smile,
            eyes_closed=args.eyes_closed,
            brows=args.brows,
        ).check()
        if args.scale < 1 or args.scale > 16:
            raise InputError(f"--scale {args.scale} must be in 1..16")
        # The user's inputs are checked before the (slower) model load.
        image, lm, frame = face_input(args.image, args.landmarks)
        drive = face_input(args.drive, args.drive_landmarks) if args.drive else None
        editor = PortraitEditor.load(args.model)
        face = editor.prepare(image, lm, frame, args.crop, args.image)
        if drive is not None:
            driver = editor.prepare(drive[0], drive[1], drive[2], args.crop, args.drive)
            edits = replace(edits, drive=driver.landmarks)
        edits.check(editor.size)
        if args.sweep:
            rows = editor.sweep(face, args.sweep, edits)
            out = save_rgb(args.out, sweep_sheet(face, rows, args.sweep, scale=max(args.scale, 3)))
        else:
            out = save_rgb(args.out, enlarge(editor.edit(face, edits), args.scale))
        print(f"wrote {out}")
        return 0
    except (InputError, PoseExtraMissing) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
