"""The synthetic data generators, by the name ``synthesize.<dataset>.generator`` gives them.

Each generator module offers ``write_dataset(spec, root, on_image)``, which renders the whole
dataset into ``root`` (atomically) and returns a :class:`Summary`; the registry adds the noun its
one-line description counts in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets.specs import SynthesizeSpec
from datasets.synthetic import fashion, portrait_dataset
from datasets.synthetic.synthesis_summary import Summary


@dataclass(frozen=True)
class SyntheticGenerator:
    """One synthetic data generator: its writer and how its summary names its images."""

    write: Callable[[SynthesizeSpec, str | Path, Callable[[Any], None] | None], Summary]
    noun: str  # what its images are called in the summary line


# One entry per SynthesizeSpec.generator value.
GENERATORS: dict[str, SyntheticGenerator] = {
    "figure": SyntheticGenerator(fashion.write_dataset, "images"),
    "portrait": SyntheticGenerator(portrait_dataset.write_dataset, "portraits"),
}
