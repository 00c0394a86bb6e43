"""One image brought into the annotation frame: decoded, made RGB, fitted by a declared policy, encoded.

:func:`conform` is what ``prepare`` does to every release image.  The result depends only on the
file's bytes and the policy (fixed resampling filter, fixed JPEG settings, no threads involved),
so any number of workers writes the same bytes.  Problems come back as a reason string — the
file is never half-converted:

* ``unreadable image: …`` — zero bytes, not an image, or the decoder stops (a truncated file);
* ``not RGB after conversion: …`` — a mode with no unambiguous RGB form (16-bit, float);
* ``aspect ratio … beyond the policy's tolerance`` — the picture would have to be distorted.

Modes that convert without guessing are converted (CMYK, YCbCr, grey, palette; alpha is
flattened onto white, the catalogue backdrop) and the conversion is reported in the note.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from PIL import Image, ImageOps

JPEG_SUBSAMPLING = 0  # 4:4:4, as the synthetic writer: thin garment patterns survive
CONVERTIBLE_MODES = frozenset({"RGB", "L", "P", "CMYK", "YCbCr", "RGBA", "LA", "PA", "RGBa", "La", "1"})


@dataclass(frozen=True)
class FitPolicy:
    frame: tuple[int, int]  # (H, W) of the annotation frame
    fit: str  # resize | crop
    aspect_tolerance: float
    jpeg_quality: int


@dataclass(frozen=True)
class Conformed:
    data: bytes | None  # the JPEG to write; None when rejected
    reason: str = ""  # why it was rejected
    note: str = ""  # what was done to it ("copied", "resized 750x1101", "mode CMYK→RGB, resized …")


def aspect_error(size_wh: tuple[int, int], frame_hw: tuple[int, int]) -> float:
    """Relative difference between an image's W/H and the frame's."""
    (w, h), (fh, fw) = size_wh, frame_hw
    return abs((w / h) / (fw / fh) - 1.0)


def to_rgb(img: Image.Image) -> tuple[Image.Image | None, str]:
    """(RGB image, note) or (None, reason)."""
    if img.mode == "RGB":
        return img, ""
    if img.mode not in CONVERTIBLE_MODES:
        return None, (
            f"not RGB after conversion: mode {img.mode} has no unambiguous RGB form "
            f"(convertible: {', '.join(sorted(CONVERTIBLE_MODES))})"
        )
    mode = img.mode
    if (mode == "P" and "transparency" in img.info) or mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
    else:
        out = img.convert("RGB")
    if out.mode != "RGB":
        return None, f"not RGB after conversion: mode {mode} became {out.mode}"
    return out, f"mode {mode}→RGB"


def crop_box(size_wh: tuple[int, int], frame_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The centred box of the frame's aspect inside an image (the field's (40, 0, 216, 256) for 256×256)."""
    (w, h), (fh, fw) = size_wh, frame_hw
    if w * fh > h * fw:  # too wide: cut columns
        cw = round(h * fw / fh)
        x0 = (w - cw) // 2
        return x0, 0, x0 + cw, h
    ch = round(w * fh / fw)
    y0 = (h - ch) // 2
    return 0, y0, w, y0 + ch


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(
        buf, format="JPEG", quality=quality, subsampling=JPEG_SUBSAMPLING, optimize=False, progressive=False
    )
    return buf.getvalue()


def decode(data: bytes, exif: bool = False) -> tuple[Image.Image | None, str, str]:
    """(fully decoded image, its format, "") or (None, "", reason); ``exif`` applies the orientation tag."""
    if not data:
        return None, "", "unreadable image: zero-byte file"
    try:
        img: Image.Image = Image.open(io.BytesIO(data))
        fmt = img.format or ""
        img.load()  # a truncated file fails here, not later in a worker's resize
        if exif:
            img = ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError… on bad data
        # PIL names the in-memory buffer by its address: dropped, so a reject reason (and the rejects
        # file it goes to) is the same on every run
        message = _OBJECT_ADDRESS.sub(">", str(exc))
        return None, "", f"unreadable image: {type(exc).__name__}: {message[:80]}"
    return img, fmt, ""


_OBJECT_ADDRESS = re.compile(r" (?:object )?at 0x[0-9a-fA-F]+>")


def conform(data: bytes, suffix: str, policy: FitPolicy) -> Conformed:
    """The release file's bytes → the JPEG at ``policy.frame``, or the reason it cannot be."""
    img, fmt, reason = decode(data)
    if img is None:
        return Conformed(None, reason)
    fh, fw = policy.frame
    w, h = img.size
    err = aspect_error((w, h), policy.frame)
    if err > policy.aspect_tolerance:
        return Conformed(
            None,
            f"aspect ratio {w / h:.3f} ({w}x{h} WxH) is {100 * err:.1f}% off the frame's "
            f"{fw / fh:.3f} ({fw}x{fh}), beyond the policy's tolerance "
            f"(fit {policy.fit}, aspect_tolerance {policy.aspect_tolerance})",
        )
    notes = []
    if fmt != "JPEG" or suffix.lower() not in (".jpg", ".jpeg"):
        notes.append(f"{fmt or 'unknown'} content→JPEG")
    if fmt == "JPEG" and img.mode == "RGB" and (h, w) == (fh, fw) and not notes:
        return Conformed(data, note="copied")  # already the frame: the release's own bytes
    rgb, mode_note = to_rgb(img)
    if rgb is None:
        return Conformed(None, mode_note)
    if mode_note:
        notes.append(mode_note)
    if policy.fit == "crop" and (w, h) != (fw, fh):
        box = crop_box((w, h), policy.frame)
        if box != (0, 0, w, h):
            rgb = rgb.crop(box)
            notes.append(f"cropped to {box}")
    if rgb.size != (fw, fh):
        notes.append(f"resized {rgb.size[0]}x{rgb.size[1]}→{fw}x{fh}")
        rgb = rgb.resize((fw, fh), Image.Resampling.LANCZOS)
    return Conformed(encode_jpeg(rgb, policy.jpeg_quality), note=", ".join(notes))
