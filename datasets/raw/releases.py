"""The official releases as downloaded, read into a plan: which file becomes which image of which split.

DeepFashion In-shop (``--dataset deepfashion``)::

    FROM/img_highres/MEN|WOMEN/<category>/id_XXXXXXXX/NN_V_view.jpg   (750×1101; or img/, 256×256)
    FROM/train.lst, FROM/test.lst          the field's split, one flattened name a line
      or FROM/[Eval/]list_eval_partition.txt   the official split (train → train, query/gallery → test)
    FROM/fasion-resize-annotation-{train,test}.csv   (or fasion-/fashion-/fashion-resize-) 256×176 frame
    FROM/fasion-resize-pairs-{train,test}.csv

File names are flattened exactly as the field's ``generate_fashion_datasets.py`` does it
(:func:`flatten_deepfashion`).  Market-1501 (``--dataset market``)::

    FROM/bounding_box_train/, FROM/bounding_box_test/, FROM/query/   PPPP_cCsS_FFFFFF_NN.jpg, 128×64
    FROM/market-annotation-{train,test}.csv, FROM/market-pairs-{train,test}.csv

keeps the release's names; the folder decides the split (``query/`` joins the test split unless
``prepare.<name>.include_query`` is false).  Every image file under FROM is planned: either as an
image to convert into a split, or as a reject with its reason (outside the tree that is read, not
in any split list, no annotation row, a duplicate name).  Reading never stops at a bad row or file;
only a release missing a whole part (no image tree, no split list, no annotation CSV) raises
:class:`ReleaseError`, naming every file name looked for.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from datasets.raw.layout import CSV_PREFIXES, SPLITS, PairRow, get_layout, parse_keypoint_cell, read_pairs

# What a release may hold as images (the releases are JPEG; a user's copy may have been re-saved).
RELEASE_IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
DEEPFASHION_TREES: tuple[str, ...] = ("img_highres", "img")  # first found is read
PARTITION_FILES: tuple[str, ...] = ("list_eval_partition.txt", "Eval/list_eval_partition.txt")
PARTITION_SPLIT = {"train": "train", "query": "test", "gallery": "test"}
MARKET_FOLDERS: dict[str, str] = {"bounding_box_train": "train", "bounding_box_test": "test", "query": "test"}
OUTPUT_PREFIX = {"deepfashion": "fasion", "market": "market"}  # CSV names of the written layout


class ReleaseError(ValueError):
    """The release folder lacks a part that every image needs (the message lists what was looked for)."""


@dataclass(frozen=True)
class PrepareReject:
    """One input that does not reach the layout (a line of prepare-rejects.csv): ``kind`` image|list|row|pair."""

    kind: str
    split: str  # "" when the input belongs to no split
    source: str  # the file (or list/CSV and line) it came from, relative to the release folder
    name: str  # the layout name it would have had
    reason: str


@dataclass(frozen=True)
class PlannedImage:
    source: str  # path relative to the release folder (posix)
    name: str  # the layout's file name
    split: str  # train | test


@dataclass(frozen=True)
class AnnotationText:
    """An annotation row as the field wrote it: the two keypoint cells kept verbatim."""

    name: str
    y_cell: str
    x_cell: str
    source: str  # CSV file name and line, for messages

    def line(self) -> str:
        return f"{self.name}:{self.y_cell}:{self.x_cell}"


@dataclass
class ReleasePlan:
    release: str  # deepfashion | market
    root: Path
    images: list[PlannedImage] = field(default_factory=list)  # to convert, in source order
    rejects: list[PrepareReject] = field(
        default_factory=list
    )  # images, list entries and rows already dropped
    rows: dict[str, AnnotationText] = field(default_factory=dict)  # name -> row, in CSV order
    pairs: dict[str, list[PairRow]] = field(default_factory=dict)  # split -> pair rows in CSV order
    images_found: int = 0  # image files under the release folder
    other_files: int = 0  # files that are not images (Thumbs.db, readme.txt, the lists and CSVs)
    inputs: dict[str, str] = field(default_factory=dict)  # role -> file name read


def flatten_deepfashion(rel: str) -> str:
    """The field's flattened name of an In-shop image path (any tree root: img/ or img_highres/).

    ``img_highres/MEN/Denim/id_00000080/01_1_front.jpg`` → ``fashionMENDenimid0000008001_1front.jpg``:
    ``fashion``, then gender and category as they are (``Blouses_Shirts`` keeps its underscore),
    the item folder without underscores, the file name's first field, one ``_``, and the remaining
    fields joined without underscores (GFLA's ``generate_fashion_datasets.py``: ``path_names[3]
    .replace('_', '')`` and ``split('_')[0] + '_' + ''.join(split('_')[1:])``).
    """
    parts = rel.split("/")
    if len(parts) != 5:
        raise ValueError(f"{rel}: expected <tree>/MEN|WOMEN/<category>/id_XXXXXXXX/<file>")
    _tree, gender, category, item, fname = parts
    head, *rest = fname.split("_")
    if not rest:
        raise ValueError(f"{rel}: file name {fname!r} does not follow NN_V_view.jpg")
    return "fashion" + gender + category + item.replace("_", "") + head + "_" + "".join(rest)


def _image_files(root: Path) -> tuple[list[str], int]:
    """All image files under ``root`` (posix, relative, sorted) and the number of other files."""
    images, others = [], 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue  # hidden entries: a staging folder of an interrupted copy, .DS_Store
        if path.suffix.lower() in RELEASE_IMAGE_SUFFIXES:
            images.append(path.relative_to(root).as_posix())
        else:
            others += 1
    return images, others


def _first_file(root: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (root / name).is_file():
            return root / name
    raise ReleaseError(f"{root}: no {what}; looked for {', '.join(names)}")


def read_annotation_texts(
    path: Path, layout: str, rejects: list[PrepareReject], split: str, rows: dict[str, AnnotationText]
) -> None:
    """Add the rows of one annotation CSV to ``rows``; malformed and conflicting rows become rejects."""
    spec = get_layout(layout)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=spec.separator)
        header = [h.strip() for h in next(reader, [])]
        wanted = (spec.name_column, spec.y_column, spec.x_column)
        if any(col not in header for col in wanted):
            raise ReleaseError(
                f"{path}: header must hold columns {spec.separator.join(wanted)}, got {header}"
            )
        i_name, i_y, i_x = (header.index(c) for c in wanted)
        for line, cells in enumerate(reader, start=2):
            if not cells or all(not c.strip() for c in cells):
                continue
            where = f"{path.name}:{line}"
            name = cells[i_name].strip() if len(cells) > i_name else ""
            if len(cells) != len(header) or not name:
                rejects.append(
                    PrepareReject(
                        "row",
                        split,
                        where,
                        name,
                        f"malformed row: {len(cells)} fields, "
                        f"expected {len(header)} with a {spec.name_column}",
                    )
                )
                continue
            try:
                for col, i in ((spec.y_column, i_y), (spec.x_column, i_x)):
                    parse_keypoint_cell(cells[i], spec.num_keypoints, col)
            except ValueError as exc:
                rejects.append(PrepareReject("row", split, where, name, f"malformed keypoint cell {exc}"))
                continue
            row = AnnotationText(name, cells[i_y].strip(), cells[i_x].strip(), where)
            earlier = rows.get(name)
            if earlier is None:
                rows[name] = row
            elif (earlier.y_cell, earlier.x_cell) != (row.y_cell, row.x_cell):
                rejects.append(
                    PrepareReject(
                        "row", split, where, name, f"duplicate name: disagrees with {earlier.source}"
                    )
                )


def _read_csvs(plan: ReleasePlan, layout: str) -> None:
    prefixes = CSV_PREFIXES[layout]
    for split in SPLITS:
        ann = _first_file(plan.root, tuple(f"{p}-annotation-{split}.csv" for p in prefixes), "annotation CSV")
        pairs = _first_file(plan.root, tuple(f"{p}-pairs-{split}.csv" for p in prefixes), "pairs CSV")
        plan.inputs[f"annotation_{split}"], plan.inputs[f"pairs_{split}"] = ann.name, pairs.name
        read_annotation_texts(ann, layout, plan.rejects, split, plan.rows)
        pair_rows, issues = read_pairs(pairs, get_layout(layout))
        plan.pairs[split] = pair_rows
        plan.rejects += [PrepareReject("pair", split, f"{i.file}:{i.line}", i.name, i.reason) for i in issues]


def _deepfashion_lists(root: Path, plan: ReleasePlan) -> dict[str, str]:
    """Flattened name -> split, from train.lst/test.lst (the field's) or the official partition."""
    lists = {s: root / f"{s}.lst" for s in SPLITS}
    membership: dict[str, str] = {}
    if all(p.is_file() for p in lists.values()):
        for split, path in lists.items():
            plan.inputs[f"list_{split}"] = path.name
            for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                name = line.strip()
                if not name:
                    continue
                other = membership.get(name)
                if other is not None and other != split:
                    plan.rejects.append(
                        PrepareReject(
                            "list",
                            split,
                            f"{path.name}:{line_no}",
                            name,
                            f"listed in both {other}.lst and {split}.lst",
                        )
                    )
                    membership[name] = "both"
                else:
                    membership[name] = split
        return membership
    found = [n for n in PARTITION_FILES if (root / n).is_file()]
    if not found:
        missing = [p.name for p in lists.values() if not p.is_file()]
        raise ReleaseError(
            f"{root}: no split lists; looked for train.lst and test.lst (missing: "
            f"{', '.join(missing)}), or {' / '.join(PARTITION_FILES)}"
        )
    path = root / found[0]
    plan.inputs["partition"] = found[0]
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        # Line 1 is the image count, line 2 the column names; then "img/... id_... train|query|gallery".
        if len(fields) != 3 or fields[2] not in PARTITION_SPLIT:
            if line_no > 2 and fields:
                plan.rejects.append(
                    PrepareReject(
                        "list",
                        "",
                        f"{path.name}:{line_no}",
                        line.strip()[:80],
                        "malformed partition line: expected <path> <item_id> train|query|gallery",
                    )
                )
            continue
        try:
            membership[
                flatten_deepfashion(fields[0] if fields[0].count("/") == 4 else "img/" + fields[0])
            ] = PARTITION_SPLIT[fields[2]]
        except ValueError as exc:
            plan.rejects.append(PrepareReject("list", "", f"{path.name}:{line_no}", fields[0], str(exc)))
    return membership


def plan_deepfashion(root: str | Path) -> ReleasePlan:
    root = Path(root)
    if not root.is_dir():
        raise ReleaseError(f"{root}: release folder not found")
    plan = ReleasePlan("deepfashion", root)
    tree = next((t for t in DEEPFASHION_TREES if (root / t).is_dir()), None)
    if tree is None:
        raise ReleaseError(
            f"{root}: no image tree; looked for {', '.join(t + '/' for t in DEEPFASHION_TREES)}"
        )
    plan.inputs["images"] = tree + "/"
    membership = _deepfashion_lists(root, plan)
    _read_csvs(plan, "deepfashion")
    files, plan.other_files = _image_files(root)
    plan.images_found = len(files)
    listed_names = (
        {"train": "train.lst", "test": "test.lst"}
        if "list_train" in plan.inputs
        else {"train": plan.inputs.get("partition", ""), "test": plan.inputs.get("partition", "")}
    )
    seen: dict[str, str] = {}
    for rel in files:
        if not rel.startswith(tree + "/"):
            plan.rejects.append(PrepareReject("image", "", rel, "", f"outside {tree}/, the image tree read"))
            continue
        try:
            name = flatten_deepfashion(rel)
        except ValueError as exc:
            plan.rejects.append(PrepareReject("image", "", rel, "", f"not in the release's tree: {exc}"))
            continue
        _admit(
            plan,
            rel,
            name,
            membership.get(name, ""),
            seen,
            lists=" or ".join(dict.fromkeys(listed_names.values())),
        )
    _missing_list_entries(plan, membership, seen, listed_names)
    return plan


def plan_market(root: str | Path, include_query: bool = True) -> ReleasePlan:
    root = Path(root)
    if not root.is_dir():
        raise ReleaseError(f"{root}: release folder not found")
    missing = [f for f in ("bounding_box_train", "bounding_box_test") if not (root / f).is_dir()]
    if missing:
        raise ReleaseError(
            f"{root}: no {' or '.join(m + '/' for m in missing)} (Market-1501's image folders: "
            f"{', '.join(f + '/' for f in MARKET_FOLDERS)})"
        )
    plan = ReleasePlan("market", root)
    folders = {f: s for f, s in MARKET_FOLDERS.items() if include_query or f != "query"}
    plan.inputs["images"] = ", ".join(f + "/" for f in folders)
    _read_csvs(plan, "market")
    files, plan.other_files = _image_files(root)
    plan.images_found = len(files)
    seen: dict[str, str] = {}
    for rel in files:
        folder, _, name = rel.rpartition("/")
        split = folders.get(folder, "")
        if not split:
            why = (
                "query/ is excluded (prepare.include_query: false)"
                if folder == "query"
                else f"folder {folder or '.'}/ is not a split folder ({', '.join(f + '/' for f in folders)})"
            )
            plan.rejects.append(PrepareReject("image", "", rel, name, f"not in any split list: {why}"))
            continue
        _admit(plan, rel, name, split, seen, lists="")
    return plan


def _admit(plan: ReleasePlan, rel: str, name: str, split: str, seen: dict[str, str], lists: str) -> None:
    """Plan one image of a split, or reject it (not listed, no annotation row, duplicate name)."""
    if split == "both":
        plan.rejects.append(PrepareReject("image", "", rel, name, "listed in both splits"))
    elif not split:
        plan.rejects.append(PrepareReject("image", "", rel, name, f"not in any split list ({lists})"))
    elif name in seen:
        plan.rejects.append(
            PrepareReject("image", split, rel, name, f"duplicate name: {seen[name]} has the same layout name")
        )
    elif name not in plan.rows:
        csvs = " / ".join(plan.inputs[f"annotation_{s}"] for s in SPLITS)
        plan.rejects.append(PrepareReject("image", split, rel, name, f"no annotation row ({csvs})"))
    else:
        seen[name] = rel
        plan.images.append(PlannedImage(rel, name, split))


def _missing_list_entries(
    plan: ReleasePlan, membership: dict[str, str], seen: dict[str, str], listed_in: dict[str, str]
) -> None:
    """List entries with no image in the release: reported, so a partial download is visible."""
    present = set(seen) | {r.name for r in plan.rejects if r.kind == "image"}
    for name, split in membership.items():
        if name not in present and split in listed_in:
            plan.rejects.append(
                PrepareReject(
                    "list",
                    split,
                    listed_in[split],
                    name,
                    f"listed in {listed_in[split]}, no image in the release",
                )
            )


def plan_release(release: str, root: str | Path, include_query: bool = True) -> ReleasePlan:
    if release == "deepfashion":
        return plan_deepfashion(root)
    if release == "market":
        return plan_market(root, include_query)
    raise ReleaseError(f"no official release reader for layout {release!r} (known: deepfashion, market)")
