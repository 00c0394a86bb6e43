"""The field's output names (pipelines/evaluation/naming.py) and the pixels read from them
(pipelines/evaluation/generated.py): format and parse, folder matching, strips, resize policies."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipelines.evaluation import naming
from pipelines.evaluation.generated import RESIZE, check_all, fit, load_generated
from pipelines.evaluation.naming import CONVENTIONS, FolderError

# DeepFashion's and Market's test names, and a stem that itself holds "_2_".
NAMES = ["fashionWOMENBlouses_Shirtsid0000637003_1front.jpg", "fashionWOMENBlouses_Shirtsid0000637003_7additional.jpg",
         "0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "odd_2_name.png", "other.png"]
PAIRS = [(NAMES[0], NAMES[1]), (NAMES[1], NAMES[0]), (NAMES[2], NAMES[3]), (NAMES[4], NAMES[5])]


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_each_convention_formats_and_parses_back(name: str) -> None:
    conv = CONVENTIONS[name]
    stems = {Path(n).stem for n in NAMES}
    for src, tgt in PAIRS:
        for ext in (None, ".png", ".jpg"):
            filename = conv.format(src, tgt, ext)
            assert filename.startswith(f"{Path(src).stem}_2_{Path(tgt).stem}")
            assert filename.endswith(conv.suffix + (ext or conv.written_ext))
            assert conv.parse(filename, stems) == (Path(src).stem, Path(tgt).stem)
    # Without the test names a stem holding "_2_" splits two ways: not guessed.
    assert conv.parse(conv.format(NAMES[4], NAMES[5])) is None
    assert conv.parse(conv.format(NAMES[0], NAMES[1])) == (Path(NAMES[0]).stem, Path(NAMES[1]).stem)
    assert conv.parse("notes.txt") is None


def test_the_field_names_its_outputs_as_its_code_does() -> None:
    src, tgt = NAMES[0], NAMES[1]
    both = "fashionWOMENBlouses_Shirtsid0000637003_1front_2_fashionWOMENBlouses_Shirtsid0000637003_7additional"
    assert CONVENTIONS["gfla"].format(src, tgt) == both + "_vis.jpg"  # base_model.save_results: data_ext='jpg'
    assert CONVENTIONS["gfla-all"].format(src, tgt) == both + "_all.jpg"
    assert CONVENTIONS["nted"].format(src, tgt) == both + "_vis.png"
    assert CONVENTIONS["pidm"].format(src, tgt) == both + "_vis.png"
    assert CONVENTIONS["attnflow"].format(src, tgt) == both + ".png"
    assert CONVENTIONS["gfla"].parse(both + "_all.jpg") is None  # another suffix is another convention
    with pytest.raises(FolderError, match="pose_transfer_test.py"):
        naming.convention("cfld")
    with pytest.raises(FolderError, match="unknown convention"):
        naming.convention("nope")


def _touch(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def _pairs(n: int) -> list[tuple[str, str]]:
    return [(f"p{i:03d}_1front.jpg", f"p{i:03d}_2side.jpg") for i in range(n)]


def test_missing_and_extra_pairs_are_refused_with_both_lists(tmp_path: Path) -> None:
    gfla = CONVENTIONS["gfla"]
    pairs = _pairs(30)
    present = [gfla.format(s, t, ".png") for s, t in pairs[12:]]  # 12 missing
    _touch(tmp_path, present + [gfla.format("p999_1front.jpg", "p000_2side.jpg", ".png"),  # not a test pair
                                gfla.format(*pairs[20], ".jpg"),  # a second file for one pair
                                "contact_sheet.png"])
    with pytest.raises(FolderError) as err:
        naming.match(tmp_path, pairs, gfla)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path}: convention gfla")
    assert "12 of 30 test pairs have no image, 3 images are no test pair's" in msg
    assert "missing (12): p000_1front_2_p000_2side_vis.jpg" in msg and "... and 2 more" in msg
    assert "p011_1front_2_p011_2side_vis.jpg" not in msg  # the first 10 only
    assert "contact_sheet.png (not named" in msg and "a second file for" in msg
    assert "p999_1front_2_p000_2side_vis.png" in msg


def test_a_complete_folder_matches_and_ignores_gflas_companion_files(tmp_path: Path) -> None:
    pairs = _pairs(4)
    # GFLA with --save_input writes the output, the source, the target and the strip of each pair.
    _touch(tmp_path, [CONVENTIONS[c].format(s, t) for s, t in pairs for c in ("gfla", "gfla-all")]
           + [f"{Path(s).stem}_2_{Path(t).stem}{k}.jpg" for s, t in pairs for k in ("_ref", "_gt")]
           + ["notes.txt"])
    conv, said = naming.detect(tmp_path, pairs)
    assert conv.name == "gfla" and "GFLA / NTED / PIDM" in said  # the single panel over the strip
    matched = naming.match(tmp_path, pairs, conv)
    assert matched.files == {(s, t): tmp_path / CONVENTIONS["gfla"].format(s, t) for s, t in pairs}
    assert len(matched.ignored) == 12
    assert naming.match(tmp_path, pairs, CONVENTIONS["gfla-all"]).files[pairs[0]].stem.endswith("_all")


def test_auto_detection_says_what_it_found_or_why_not(tmp_path: Path) -> None:
    pairs = _pairs(3)
    _touch(tmp_path / "own", [CONVENTIONS["attnflow"].format(s, t) for s, t in pairs])
    assert naming.detect(tmp_path / "own", pairs)[0].name == "attnflow"
    _touch(tmp_path / "other", ["a.png"])
    with pytest.raises(FolderError, match="no file is named for a test pair"):
        naming.detect(tmp_path / "other", pairs)
    (tmp_path / "nted" / "epoch_00001_iteration_000495400").mkdir(parents=True)
    with pytest.raises(FolderError, match="epoch_00001_iteration_000495400"):
        naming.detect(tmp_path / "nted", pairs)
    with pytest.raises(FolderError, match="no such folder"):
        naming.detect(tmp_path / "absent", pairs)
    # A folder named under another convention than the one asked for: the lists, and the hint.
    with pytest.raises(FolderError, match="the names fit --convention attnflow"):
        naming.match(tmp_path / "own", pairs, CONVENTIONS["gfla"])


def _save(path: Path, rgb: np.ndarray) -> Path:
    Image.fromarray(rgb).save(path)
    return path


def test_a_strip_is_cut_to_its_generated_panel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    source, generated, target = (rng.integers(0, 256, (16, 8, 3), dtype=np.uint8) for _ in range(3))
    strip = _save(tmp_path / "a_2_b_all.png", np.concatenate([source, generated, target], axis=1))
    np.testing.assert_array_equal(load_generated(strip, CONVENTIONS["gfla-all"], "none", (16, 8)), generated)
    odd = _save(tmp_path / "c_2_d_all.png", np.zeros((16, 25, 3), np.uint8))
    with pytest.raises(FolderError, match=r"c_2_d_all.png: 25 px wide, not 3 panels"):
        load_generated(odd, CONVENTIONS["gfla-all"], "none", (16, 8))


def test_resize_policies(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    inner = rng.integers(0, 256, (32, 22, 3), dtype=np.uint8)
    padded = np.full((32, 32, 3), 255, np.uint8)
    padded[:, 5:27] = inner  # a 32x22 image padded to a square, as 256x176 in 256x256
    path = tmp_path / "x_2_y_vis.png"
    assert set(RESIZE) == {"none", "bicubic", "bilinear", "area", "center-crop"}
    with pytest.raises(FolderError, match=r"x_2_y_vis.png: 32x32, the dataset's images are 32x22; --resize"):
        fit(padded, (32, 22), "none", path)
    np.testing.assert_array_equal(fit(padded, (32, 22), "center-crop", path), inner)
    with pytest.raises(FolderError, match="smaller than the dataset's"):
        fit(inner, (32, 32), "center-crop", path)
    for policy in ("bicubic", "bilinear", "area"):
        out = fit(padded, (32, 22), policy, path)
        assert out.shape == (32, 22, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(fit(inner, (32, 22), policy, path), inner)  # the right size: untouched
    expected = np.asarray(Image.fromarray(padded).resize((22, 32), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(fit(padded, (32, 22), "bicubic", path), expected)


def test_images_decode_as_the_shards_do_and_bad_files_are_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (tmp_path / "a_2_b_vis.jpg").write_bytes(jpeg.tobytes())
    from datasets.shards.samples import decode_image

    got = load_generated(tmp_path / "a_2_b_vis.jpg", CONVENTIONS["gfla"], "none", (16, 8))
    np.testing.assert_array_equal(got, decode_image(jpeg.tobytes(), "same bytes"))
    png = _save(tmp_path / "c_2_d_vis.png", rgb)
    np.testing.assert_array_equal(load_generated(png, CONVENTIONS["gfla"], "none", (16, 8)), rgb)
    (tmp_path / "e_2_f_vis.png").write_bytes(b"not an image")
    with pytest.raises(FolderError, match=r"e_2_f_vis.png: not a readable image"):
        check_all([png, tmp_path / "e_2_f_vis.png"], CONVENTIONS["gfla"], "none", (16, 8))
    assert len(check_all([png], CONVENTIONS["gfla"], "none", (16, 8))) == 64
