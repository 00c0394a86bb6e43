"""What a synthetic generator wrote: counts per split and speed, and its one-line description."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets.specs import SynthesizeSpec


@dataclass(frozen=True)
class Summary:
    root: Path
    images: dict[str, int]
    pairs: dict[str, int]
    identities: dict[str, int]
    seconds: float

    @property
    def images_per_s(self) -> float:
        return sum(self.images.values()) / max(self.seconds, 1e-9)

    def describe(self, noun: str = "images") -> str:
        n = sum(self.images.values())
        return (
            f"{n} {noun} ({self.images['train']} train / {self.images['test']} test, "
            f"{self.identities['train']}+{self.identities['test']} identities), "
            f"{self.pairs['train']}+{self.pairs['test']} pairs in {self.seconds:.1f} s "
            f"({self.images_per_s:.0f} images/s)"
        )


def total_images(spec: SynthesizeSpec) -> int:
    """Images a generator writes for ``spec`` (every identity's views), for a progress bar."""
    twins = spec.train_identities * spec.views_per_identity * spec.expression_twins
    return (spec.train_identities + spec.test_identities) * spec.views_per_identity + twins
