"""A folder of real photos for ``prepare --photos``, from the photos scikit-image ships (offline).

``astronaut/``: the astronaut photo, a mirrored copy (PNG), a crop (WebP) and a copy stored rotated
with an EXIF orientation tag that puts it upright again; ``camera/``: the cameraman, mirrored and
cropped; ``astronaut/`` also holds a side-by-side of two astronauts (several people), a close crop
of the face (too few joints), and ``camera/`` the coffee-cup photo (no person).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

EXPECTED = {  # source -> outcome (reason prefix) for prepare --photos
    "astronaut/01_original.jpg": "written",
    "astronaut/02_mirrored.png": "written",
    "astronaut/03_cropped.webp": "written",
    "astronaut/04_exif_rotated.jpg": "written",
    "astronaut/05_two_people.jpg": "several people",
    "astronaut/06_face_only.jpg": "too few joints",
    "camera/01_original.jpg": "written",
    "camera/02_mirrored.jpg": "written",
    "camera/03_cropped.jpg": "written",
    "camera/04_coffee.jpg": "no person",
}


def make_photo_folder(root: Path) -> Path:
    from skimage import data

    astro = data.astronaut()
    camera = np.stack([data.camera()] * 3, axis=-1)
    a, c = root / "astronaut", root / "camera"
    a.mkdir(parents=True)
    c.mkdir(parents=True)
    Image.fromarray(astro).save(a / "01_original.jpg", quality=92)
    Image.fromarray(astro[:, ::-1]).save(a / "02_mirrored.png")
    Image.fromarray(astro[16:, 0:440]).save(a / "03_cropped.webp", quality=90)
    # Stored turned a quarter anticlockwise; EXIF orientation 6 tells a viewer to turn it back.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(astro, 1)).save(a / "04_exif_rotated.jpg", quality=92, exif=exif)
    Image.fromarray(np.concatenate([astro, astro[:, ::-1]], axis=1)).save(a / "05_two_people.jpg", quality=92)
    Image.fromarray(astro[20:200, 120:300]).save(a / "06_face_only.jpg", quality=92)
    Image.fromarray(camera).save(c / "01_original.jpg", quality=92)
    Image.fromarray(camera[:, ::-1]).save(c / "02_mirrored.jpg", quality=92)
    Image.fromarray(camera[40:, 20:480]).save(c / "03_cropped.jpg", quality=92)
    Image.fromarray(data.coffee()).save(c / "04_coffee.jpg", quality=92)
    return root
