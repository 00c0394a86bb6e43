"""The synthetic data generators, by the name ``synthesize.<dataset>.generator`` gives them.

Each generator module offers the same three functions: ``write_dataset(spec, root, on_image)``
renders the whole dataset into ``root`` (atomically) and returns a :class:`Summary`,
``total_images(spec)`` counts the images it will write (for a progress bar) and
``describe(summary)`` says in one line what was written.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets.specs import SynthesizeSpec
from datasets.synthetic import fashion, portrait
from datasets.synthetic.fashion import Summary


@dataclass(frozen=True)
class SyntheticGenerator:
    """The three functions of one synthetic data generator."""

    write: Callable[[SynthesizeSpec, str | Path, Callable[[Any], None] | None], Summary]
    total: Callable[[SynthesizeSpec], int]
    describe: Callable[[Summary], str]


# One entry per SynthesizeSpec.generator value.
GENERATORS: dict[str, SyntheticGenerator] = {
    "figure": SyntheticGenerator(fashion.write_dataset, fashion.total_images, fashion.describe),
    "portrait": SyntheticGenerator(portrait.write_dataset, portrait.total_images, portrait.describe),
}
