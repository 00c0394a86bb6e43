"""How the field's public code names its held-out outputs, and which file of a folder is which test pair.

Every convention here builds the name from the two images of the pair in the same way,
``<source stem>_2_<target stem><suffix>.<ext>``, the stems being the names of the pairs CSV without
their extension (NTED and PIDM rebuild exactly those names from their ``img/`` paths); they differ
in the suffix, the extension, the image size and whether the file is the output alone or a strip
with the source and target beside it.  The sources, file and line, are in docs/evaluation.md
"Compare with published methods".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SHOWN = 10  # names listed per kind of mismatch; the counts are always complete


class FolderError(ValueError):
    """A folder of generated images that cannot be scored as asked; the message names the file."""


@dataclass(frozen=True)
class Convention:
    name: str
    method: str
    suffix: str  # after ``<source stem>_2_<target stem>``
    written_ext: str  # what the method's code writes
    size: str  # what the method's code writes, in words
    where: str  # file and line in the method's repository
    panels: int = 1  # images side by side in one file
    panel: int = 0  # which of them is the generated image, from the left
    companions: tuple[str, ...] = ()  # suffixes of the other files the same run writes beside it

    def stem(self, source: str, target: str) -> str:
        return f"{Path(source).stem}_2_{Path(target).stem}{self.suffix}"

    def format(self, source: str, target: str, ext: str | None = None) -> str:
        """The file name this convention gives the output of the pair (source, target)."""
        return self.stem(source, target) + (ext or self.written_ext)

    def parse(self, filename: str, stems: set[str] | None = None) -> tuple[str, str] | None:
        """(source stem, target stem) of a file named by this convention, else None.  A stem may
        itself hold ``_2_``: with ``stems`` (the test images' stems) the split that names two of
        them is taken; without, a name that splits more than one way is None."""
        path = Path(filename)
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            return None
        base = path.stem
        if self.suffix:
            if not base.endswith(self.suffix):
                return None
            base = base[: -len(self.suffix)]
        splits = [(base[:i], base[i + 3 :]) for i in range(1, len(base) - 3) if base.startswith("_2_", i)]
        splits = [(a, b) for a, b in splits if a and b]
        if stems is not None:
            splits = [(a, b) for a, b in splits if a in stems and b in stems]
        return splits[0] if len(splits) == 1 else None


GFLA_SIZE = "DeepFashion 256x256 (resized from img_highres), Market 128x64"
CONVENTIONS = {
    c.name: c
    for c in (
        Convention(
            "gfla",
            "GFLA",
            "_vis",
            ".jpg",
            GFLA_SIZE,
            "model/pose_model.py:108-116, model/base_model.py:224-235",
            companions=("_ref", "_gt", "_all"),
        ),
        Convention(
            "gfla-all",
            "GFLA --save_input",
            "_all",
            ".jpg",
            f"3 panels of {GFLA_SIZE}",
            "model/pose_model.py:117-121: torch.cat([source, generated, target], 3)",
            panels=3,
            panel=1,
            companions=("_vis", "_ref", "_gt"),
        ),
        Convention(
            "nted",
            "NTED",
            "_vis",
            ".png",
            "256x176 (config/fashion_256.yaml sub_path 256-176) or 512x352",
            "data/fashion_data.py:91-95, trainers/extraction_distribution_trainer.py:217-221",
        ),
        Convention(
            "pidm",
            "PIDM",
            "_vis",
            ".png",
            "256x256 (config/data.yaml sub_path 256-256)",
            "data/fashion_data.py:141-145, utils/gen.py:153-155",
        ),
        Convention(
            "attnflow",
            "AttnFlow (pipelines.evaluate)",
            "",
            ".png",
            "the dataset's image_size",
            "pipelines/evaluation/scoring.py evaluate_pairs",
        ),
    )
}
# A name the field's code does not write for every pair, and why.
UNAVAILABLE = {
    "cfld": "CFLD's code writes no image per test pair: pose_transfer_test.py scores its outputs in memory "
    "(resized to 256x176, lines 119-121) and saves only the first batch as one grid "
    "(inpainting_test_<rank>_0.jpg, line 117), and the names of the images its README links are not "
    "spelled out in it. Name them as GFLA does (<source>_2_<target>_vis.png) and score with "
    "--convention gfla",
}
CHOICES = (*CONVENTIONS, *UNAVAILABLE, "auto")
# Conventions that name files alike: auto reports the first of each group and says so.
ALIKE = {"gfla": ("gfla", "nted", "pidm")}


def convention(name: str) -> Convention:
    if name in UNAVAILABLE:
        raise FolderError(f"--convention {name}: {UNAVAILABLE[name]}")
    if name not in CONVENTIONS:
        raise FolderError(f"unknown convention {name!r}; choose one of {', '.join(CHOICES)}")
    return CONVENTIONS[name]


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (sorted), or why the folder cannot be read."""
    if not folder.is_dir():
        raise FolderError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir())
        hint = (
            f"; it holds the folder(s) {', '.join(subfolders[:SHOWN])}: NTED writes into "
            "<output_dir>/epoch_<e>_iteration_<i>/, PIDM into images/<exp_name>/<checkpoint>-<sampler>-scale:<s>/"
            if subfolders
            else ""
        )
        raise FolderError(f"{folder}: no .png or .jpg image in it{hint}")
    return files


def detect(folder: Path, pairs: list[tuple[str, str]]) -> tuple[Convention, str]:
    """The convention under which most files of ``folder`` are test pairs' outputs, and a line saying so.
    A tie goes to the single-panel convention (GFLA's --save_input writes _vis and _all for each pair)."""
    names = {p.stem for p in image_files(folder)}
    counts = []
    for c in CONVENTIONS.values():
        if c.name in (alike for group in ALIKE.values() for alike in group[1:]):
            continue
        counts.append((sum(c.stem(s, t) in names for s, t in set(pairs)), -c.panels, c.name))
    found, _, name = max(counts)
    if not found:
        example = CONVENTIONS["gfla"].format(*pairs[0], ".png") if pairs else "<source>_2_<target>_vis.png"
        raise FolderError(
            f"{folder}: no file is named for a test pair under any convention "
            f"({', '.join(CONVENTIONS)}); GFLA's name for the first pair is {example}"
        )
    c = CONVENTIONS[name]
    alike = ALIKE.get(name)
    said = (
        f"{' / '.join(CONVENTIONS[a].method for a in alike)} names (they name files alike)"
        if alike
        else f"{c.method} names"
    )
    return (
        c,
        f"--convention auto: {found} of {len(names)} images have {said}: <source>_2_<target>{c.suffix}.<ext>",
    )


@dataclass(frozen=True)
class Matched:
    files: dict[tuple[str, str], Path]  # (source, target) as the pairs list spells them -> the file
    ignored: list[Path]  # the convention's companion files (a source or target panel alone, a strip)


def match(folder: Path, pairs: list[tuple[str, str]], conv: Convention) -> Matched:
    """The file of every test pair; refuses (FolderError listing them) pairs without a file, files
    that are no test pair's output, and pairs with two files (one per extension)."""
    wanted: dict[str, tuple[str, str]] = {conv.stem(s, t): (s, t) for s, t in pairs}
    companions = {
        conv.stem(s, t)[: len(conv.stem(s, t)) - len(conv.suffix)] + suffix
        for s, t in pairs
        for suffix in conv.companions
    }
    stems = {Path(n).stem for pair in pairs for n in pair}
    found: dict[tuple[str, str], Path] = {}
    extra: list[str] = []
    ignored: list[Path] = []
    for path in image_files(folder):
        pair = wanted.get(path.stem)
        if pair is not None and pair not in found:
            found[pair] = path
        elif pair is not None:
            extra.append(f"{path.name} (a second file for {found[pair].name})")
        elif path.stem in companions:
            ignored.append(path)
        elif (parsed := conv.parse(path.name, stems)) is not None:
            extra.append(f"{path.name} ({parsed[0]} -> {parsed[1]} is not a test pair)")
        else:
            extra.append(
                f"{path.name} (not named <source>_2_<target>{conv.suffix}.<ext> for two test images)"
            )
    missing = [conv.format(s, t) for s, t in dict.fromkeys(pairs) if (s, t) not in found]
    if missing or extra:
        lines = [
            (
                f"{folder}: convention {conv.name} (<source>_2_<target>{conv.suffix}.<png|jpg>): "
                f"{len(missing)} of {len(wanted)} test pairs have no image, {len(extra)} images are no test pair's"
            )
        ]
        for what, items in (("missing", missing), ("extra", extra)):
            if items:
                more = f" ... and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
                lines.append(f"  {what} ({len(items)}): " + ", ".join(items[:SHOWN]) + more)
        if not found:
            try:
                fits = detect(folder, pairs)[0]
                if fits.suffix != conv.suffix:
                    lines.append(f"  the names fit --convention {fits.name}")
            except FolderError:
                pass
        raise FolderError("\n".join(lines))
    return Matched(found, ignored)
