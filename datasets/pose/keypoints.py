"""Body keypoint convention: OpenPose-18 order, missing joints = -1, left/right flip pairs.

In memory keypoints are float32 arrays [K, 2] of (x, y) pixel coordinates in the
configured image frame; a missing joint is (-1, -1).  The annotation CSVs of the
field store y first, then x (see :mod:`datasets.raw.layout`).
"""

from __future__ import annotations

import numpy as np

JOINTS: tuple[str, ...] = (
    "nose",
    "neck",
    "Rsho",
    "Relb",
    "Rwri",
    "Lsho",
    "Lelb",
    "Lwri",
    "Rhip",
    "Rkne",
    "Rank",
    "Lhip",
    "Lkne",
    "Lank",
    "Leye",
    "Reye",
    "Lear",
    "Rear",
)
NUM_JOINTS = len(JOINTS)
JOINT_INDEX = {name: i for i, name in enumerate(JOINTS)}
MISSING = -1

# Pairs swapped by a horizontal flip (right <-> left).
FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (2, 5),
    (3, 6),
    (4, 7),
    (8, 11),
    (9, 12),
    (10, 13),
    (14, 15),
    (16, 17),
)

# Limbs drawn for skeleton pictures (pairs of joint indices).
LIMBS: tuple[tuple[int, int], ...] = (
    (0, 1),
    (1, 2),
    (2, 3),
    (3, 4),
    (1, 5),
    (5, 6),
    (6, 7),
    (1, 8),
    (8, 9),
    (9, 10),
    (1, 11),
    (11, 12),
    (12, 13),
    (0, 14),
    (0, 15),
    (14, 16),
    (15, 17),
)


def flip_permutation() -> np.ndarray:
    """Index array ``p`` such that ``flipped[i] = original[p[i]]`` swaps left and right."""
    perm = np.arange(NUM_JOINTS)
    for a, b in FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return perm


def visible(keypoints: np.ndarray) -> np.ndarray:
    """Boolean mask [K] of joints that are present (neither coordinate is -1)."""
    kp = np.asarray(keypoints)
    return (kp[:, 0] != MISSING) & (kp[:, 1] != MISSING)
