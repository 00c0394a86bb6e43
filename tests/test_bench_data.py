"""``python -m pipelines.bench data``: runs on a small shard set and reports every figure it names."""
from __future__ import annotations

import json

from data_fixtures import make_raw, tiny_config

from datasets.shards import build
from pipelines.bench import data as bench_data


def test_data_benchmark_reports_the_side_by_side_ratio_and_its_parts(tmp_path, capsys):
    info = make_raw(tmp_path / "raw", "fasion", train_ids=4, test_ids=2, views=3)
    build.preprocess("b", info.spec(), tiny_config(shard_size=2), tmp_path / "shards", None, None, False)
    out = tmp_path / "bench.json"
    code = bench_data.main(["--shards", str(tmp_path / "shards"), "--set",
                            f"datasets.synthetic_fashion.root={info.root}", "--workers", "0", "1",
                            "--epochs", "1", "--rounds", "2", "--batch-size", "4", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["image_size"] == [64, 44] and report["train_pairs"] == 24
    side = report["side_by_side"]
    assert side["workers"] == 1 and len(side["rounds"]) == 2
    assert side["training_pairs_per_s"] == max(r["training_pairs_per_s"] for r in side["rounds"])
    assert abs(side["ratio"] - side["training_pairs_per_s"] / side["loose_cv2_pairs_per_s"]) < 1e-3
    # What each side spends: one process against this one plus the loader worker; every pair's two
    # files decoded by the loose loop, each image once per shard visit by the loader.
    assert side["processes"] == {"loose_cv2": 1, "training": 2}
    dec = side["decodes_per_epoch"]
    assert dec["loose_cv2"] == 2 * 24 and dec["pairs"] == 24 and 0 < dec["training"] < dec["loose_cv2"]
    assert dec["training"] >= 4 * 3  # every training image at least once
    # 24 pairs can stay under the CPU clock's tick on one side: then there is no ratio, said so.
    cpu = side["cpu_ms_per_pair"]
    assert cpu["loose_cv2"] >= 0 and cpu["training"] >= 0
    if cpu["loose_cv2"] and cpu["training"]:
        assert abs(cpu["ratio"] - cpu["training"] / cpu["loose_cv2"]) < 1e-2
    else:
        assert cpu["ratio"] is None
    rows = {(r["output"], r["augment"], r["workers"]) for r in report["loader"]}
    assert rows == {(o, a, w) for o in ("float", "compact", "training") for a in (False, True) for w in (0, 1)}
    sizes = [r["size"] for r in report["components"]["render_vs_decode_by_size"]]
    assert sizes == [[64, 44], [128, 88]]
    for r in report["components"]["render_vs_decode_by_size"]:
        assert r["ratio"] > 0 and r["ratio_augmented"] > 0
    after = report["components"]["augmented_path_us_per_pair"]["after"]
    assert after["face crop"] == 0 and all(v > 0 for k, v in after.items() if k != "face crop")
    printed = capsys.readouterr().out
    assert "measured in alternation (2 rounds)" in printed and "at 64×44" in printed
    assert "2 processes: this one and 1 loader worker;" in printed and "CPU per pair, all processes" in printed
