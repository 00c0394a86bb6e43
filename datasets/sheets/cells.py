"""Cells of picture grids: nearest-neighbour enlargement and a caption band under a cell."""

from __future__ import annotations

import cv2
import numpy as np


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    if scale <= 1:
        return image
    return cv2.resize(
        image, (image.shape[1] * scale, image.shape[0] * scale), interpolation=cv2.INTER_NEAREST
    )


def label(cell: np.ndarray, text: str, height: int = 14) -> np.ndarray:
    """The cell with a white band below it holding ``text``."""
    band = np.full((height, cell.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (2, height - 4), cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([cell, band], axis=0)
