"""A planned release written as the layout ``preprocess`` reads, with every drop accounted for.

    OUT/train/*.jpg, OUT/test/*.jpg                 images at the annotation frame
    OUT/<prefix>-annotation-{train,test}.csv        the release's rows of the written images, verbatim
    OUT/<prefix>-pairs-{train,test}.csv             pairs whose two images were written in that split
    OUT/prepare-rejects.csv                         kind,split,source,name,reason
    OUT/prepare-manifest.json                       counts, policy, inputs (canonical JSON, no times)

The driver cuts the planned images into fixed chunks (``chunk_size``, in source order) before
anything runs; :func:`convert_chunk` converts one chunk inside the staging folder and returns
one (reason, note) per image; the driver then writes the CSVs, the rejects and the manifest and
swaps the folder into place (:func:`datasets.files.staged_dir`).  An image's bytes depend only
on its file and the policy, so 0, 1 or N workers produce identical folders.  For every release,
``images found = images written + images rejected`` is checked before anything is published.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from datasets.files import atomic_write_bytes, staged_dir
from datasets.parallel import ordered_map
from datasets.raw.frame import FitPolicy, conform
from datasets.raw.layout import SPLITS
from datasets.raw.releases import OUTPUT_PREFIX, PrepareReject, ReleasePlan

REJECTS_FILE = "prepare-rejects.csv"
MANIFEST_FILE = "prepare-manifest.json"
_OWN_ENTRY = re.compile(
    r"^(train|test|[\w.-]+-(annotation|pairs)-(train|test)\.csv|prepare-[\w.-]+|[\w.-]+\.png)$"
)


class PrepareError(RuntimeError):
    """The output cannot be written (an occupied folder, counts that do not add up)."""


@dataclass(frozen=True)
class ConvertJob:
    """One chunk of images: converted from ``release`` into ``staging/<split>/<name>``."""

    release: str
    staging: str
    policy: FitPolicy
    items: tuple[tuple[str, str, str], ...]  # (source relative to release, split, name)


def convert_chunk(job: ConvertJob) -> list[tuple[str, str]]:
    """Convert and write one chunk; per image ("", note) when written, (reason, "") when rejected."""
    out = []
    for rel, split, name in job.items:
        try:
            data = (Path(job.release) / rel).read_bytes()
        except OSError as exc:
            out.append((f"unreadable image: {exc.strerror or exc}", ""))
            continue
        result = conform(data, Path(rel).suffix, job.policy)
        if result.data is None:
            out.append((result.reason, ""))
            continue
        # A retried task (its worker killed) never leaves half a file.
        atomic_write_bytes(Path(job.staging) / split / name, result.data, durable=False)
        out.append(("", result.note))
    return out


def check_replaceable(out: Path) -> None:
    """The output folder is swapped whole: refuse one that holds anything but a layout."""
    if out.exists() and not (out.is_dir() and all(_OWN_ENTRY.match(p.name) for p in out.iterdir())):
        strays = (
            sorted(p.name for p in out.iterdir() if not _OWN_ENTRY.match(p.name))[:3] if out.is_dir() else []
        )
        raise PrepareError(
            f"{out} exists and holds more than a prepared layout ({', '.join(strays) or 'a file'}); "
            "refusing to replace it (pass an empty or new folder)"
        )


def reason_key(reason: str) -> str:
    """A reason without its particulars, for the counts: 'unreadable image', 'no annotation row'…"""
    return re.split(r"[:(]| \d", reason, maxsplit=1)[0].strip()


def note_keys(note: str) -> list[str]:
    return [re.sub(r"\s*[\d(].*$", "", part).strip() for part in note.split(", ") if part]


def write_rejects(path: Path, rejects: list[PrepareReject]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["kind", "split", "source", "name", "reason"])
        for r in rejects:
            writer.writerow([r.kind, r.split, r.source, r.name, r.reason])


def write_lines(path: Path, lines: list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("\n".join(lines) + "\n")


def canonical_json(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_release(
    plan: ReleasePlan,
    out: str | Path,
    policy: FitPolicy,
    *,
    workers: int = 0,
    chunk_size: int = 256,
    progress: bool = False,
    desc: str = "prepare",
) -> dict:
    """Convert every planned image and write the layout to ``out`` atomically; returns the manifest."""
    out = Path(out)
    check_replaceable(out)
    prefix = OUTPUT_PREFIX[plan.release]
    with staged_dir(out) as tmp:
        for split in SPLITS:
            (tmp / split).mkdir(parents=True)
        items = [(im.source, im.split, im.name) for im in plan.images]
        jobs = [
            ConvertJob(str(plan.root.resolve()), str(tmp.resolve()), policy, tuple(items[i : i + chunk_size]))
            for i in range(0, len(items), chunk_size)
        ]
        results = [
            r
            for chunk in ordered_map(convert_chunk, jobs, workers=workers, desc=desc, progress=progress)
            for r in chunk
        ]
        manifest = _finish(plan, tmp, prefix, policy, results)
    return manifest


def _finish(
    plan: ReleasePlan, tmp: Path, prefix: str, policy: FitPolicy, results: list[tuple[str, str]]
) -> dict:
    written: dict[str, dict[str, str]] = {s: {} for s in SPLITS}  # split -> name -> source
    image_rejects = [r for r in plan.rejects if r.kind == "image"]
    conversions: Counter = Counter()
    for im, (reason, note) in zip(plan.images, results):
        if reason:
            image_rejects.append(PrepareReject("image", im.split, im.source, im.name, reason))
        else:
            written[im.split][im.name] = im.source
            conversions.update(note_keys(note))
    image_rejects.sort(key=lambda r: r.source)
    rejects = image_rejects + [r for r in plan.rejects if r.kind in ("list", "row")]

    # Rows: the release's own lines of the written images, in CSV order; a row whose image the
    # release does not have is reported (a row of a rejected image goes with its image's reject).
    known = {im.name for im in plan.images} | {r.name for r in image_rejects if r.name}
    rows: dict[str, list[str]] = {s: ["name:keypoints_y:keypoints_x"] for s in SPLITS}
    rows_of_rejected = 0
    for name, row in plan.rows.items():
        split = next((s for s in SPLITS if name in written[s]), None)
        if split is not None:
            rows[split].append(row.line())
        elif name in known:
            rows_of_rejected += 1
        else:
            rejects.append(
                PrepareReject("row", "", row.source, name, "annotation row without an image in the release")
            )
    pair_counts = {}
    rejected_why = {r.name: r.reason for r in image_rejects if r.name}
    for split in SPLITS:
        lines, rejected = ["from,to"], 0
        for pair in plan.pairs.get(split, []):
            missing = [n for n in (pair.source, pair.target) if n not in written[split]]
            if missing:
                rejected += 1
                rejects.append(
                    PrepareReject(
                        "pair",
                        split,
                        f"{plan.inputs[f'pairs_{split}']}:{pair.line}",
                        f"{pair.source},{pair.target}",
                        _pair_reason(missing[0], split, rejected_why),
                    )
                )
            else:
                lines.append(f"{pair.source},{pair.target}")
        malformed = sum(1 for r in plan.rejects if r.kind == "pair" and r.split == split)
        rejects += [r for r in plan.rejects if r.kind == "pair" and r.split == split]
        pair_counts[split] = {
            "in": len(plan.pairs.get(split, [])) + malformed,
            "written": len(lines) - 1,
            "rejected": rejected + malformed,
        }
        write_lines(tmp / f"{prefix}-pairs-{split}.csv", lines)
        write_lines(tmp / f"{prefix}-annotation-{split}.csv", rows[split])

    n_written = sum(len(w) for w in written.values())
    if plan.images_found != n_written + len(image_rejects):
        raise PrepareError(
            f"counts do not add up: {plan.images_found} images found, {n_written} written + "
            f"{len(image_rejects)} rejected"
        )
    row_rejects = [r for r in rejects if r.kind == "row"]
    manifest = {
        "release": plan.release,
        "inputs": plan.inputs,
        "policy": {
            "frame": list(policy.frame),
            "fit": policy.fit,
            "aspect_tolerance": policy.aspect_tolerance,
            "jpeg_quality": policy.jpeg_quality,
        },
        "images": {
            "found": plan.images_found,
            "written": {s: len(written[s]) for s in SPLITS},
            "rejected": len(image_rejects),
            "rejected_by_reason": dict(sorted(Counter(reason_key(r.reason) for r in image_rejects).items())),
            "conversions": dict(sorted(conversions.items())),
        },
        "list_entries_rejected": sum(1 for r in rejects if r.kind == "list"),
        "rows": {
            "in": len(plan.rows)
            + len(row_rejects)
            - sum(1 for r in row_rejects if r.reason.startswith("annotation row without")),
            "written": sum(len(rows[s]) - 1 for s in SPLITS),
            "of_rejected_images": rows_of_rejected,
            "rejected": len(row_rejects),
        },
        "pairs": pair_counts,
        "other_files": plan.other_files,
    }
    write_rejects(tmp / REJECTS_FILE, rejects)
    (tmp / MANIFEST_FILE).write_bytes(canonical_json(manifest))
    return manifest


def _pair_reason(name: str, split: str, rejected_why: dict[str, str]) -> str:
    why = rejected_why.get(name)
    if why is not None:
        return f"image {name} was rejected ({why})"
    return f"image {name} is not in the {split} split"
