"""pipelines.evaluate and pipelines.register end to end on a tiny generated dataset."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from pipelines.evaluation.metric_table import is_statistic, lookup
from tests.test_eval_metric_table import DEFAULT_PIPELINE
from tests.train_fixtures import DATASET, make_tiny_project


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny project with shards and one committed checkpoint holding an (untrained) EMA generator."""
    from model.generator import build_generator
    from pipelines.config.params import load_config, to_dict
    from pipelines.training.checkpoint import CheckpointStore

    root = tmp_path_factory.mktemp("evalproj")
    params = make_tiny_project(root)
    cfg = load_config(params)
    torch.manual_seed(0)
    g = build_generator(cfg.model)
    store = CheckpointStore(root / "runs" / DATASET / "checkpoints")
    store.save(8, {"gan": {"ema": g.state_dict()}, "config": to_dict(cfg), "step": 8, "images": 16})
    return root, params


@pytest.fixture()
def in_project(project: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    root, params = project
    monkeypatch.chdir(root)
    monkeypatch.setenv("ATTNFLOW_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root, params


def _evaluate(params: Path, tag: str) -> dict:
    from pipelines import evaluate

    # One thread: OpenMP threads spinning on a shared 2-core box make this several times slower.
    rc = evaluate.main(["--params", str(params), "--dataset", DATASET, "--no-mlflow", "--set", "evaluate.threads=1",
                        "--metrics", f"metrics/{tag}.json", "--plots", f"plots/{tag}"])
    assert rc == 0
    return json.loads(Path(f"metrics/{tag}.protocol.json").read_text())


def test_evaluation_is_deterministic_complete_and_honestly_named(in_project: tuple[Path, Path]) -> None:
    root, params = in_project
    first, second = _evaluate(params, "a"), _evaluate(params, "b")
    for key in ("model", "baselines", "protocol", "protocol_sha256"):
        assert first[key] == second[key], key

    proto = first["protocol"]
    for field in ("pairs", "image_size", "resize", "file_format", "feature_extractors", "reference_set", "pairs_sha256"):
        assert field in proto, field
    assert proto["feature_extractors"]["fd"]["weights_sha256"] and proto["reference_set"]["sha256"]
    # No reference Inception / LPIPS weights were given: nothing may be called fid, kid or lpips; the
    # loss network (here loss.backbone=none) is recorded beside the evaluation network's hash.
    names = set(first["model"]) | {k for b in first["baselines"].values() for k in b}
    assert not {"fid", "kid", "lpips"} & names
    assert {"ssim", "ssim_range255", "psnr", "kid_effnet_lite1", "kid_effnet_lite1_std", "lpd_effnet_lite1",
            "ssim_ci95_low", "ssim_ci95_high"} <= names
    nets = proto["feature_extractors"]
    assert nets["loss_network"] == {"backbone": "none", "weights_sha256": None}
    assert nets["fd"]["name"] == "effnet_lite1" and len(nets["fd"]["weights_sha256"]) == 64
    # A handful of test pairs is far fewer than the 112 feature dimensions: no Fréchet distance, and why.
    assert "fd_effnet_lite1" not in names
    assert "feature dimensions" in first["not_computed"]["model"]["fd_effnet_lite1"]
    m = first["model"]
    assert m["ssim_ci95_low"] <= m["ssim"] <= m["ssim_ci95_high"]
    # Model against each baseline on the same pairs: the gain, its interval and the verdict.
    vs = first["model_vs_baselines"]["copy_source"]["ssim"]
    assert vs["ci95_low"] <= vs["gain"] <= vs["ci95_high"]
    assert vs["beyond_noise"] == (vs["ci95_low"] > 0 or vs["ci95_high"] < 0)  # either side of zero
    assert vs["verdict"] == ("better" if vs["ci95_low"] > 0 else "worse" if vs["ci95_high"] < 0 else "noise")
    assert vs["gain"] == pytest.approx(m["ssim"] - first["baselines"]["copy_source"]["ssim"])
    # Intervals and verdicts resample identities (2 test identities × 6 ordered pairs of 3 views),
    # and the record says which units and how many.
    iv = proto["intervals"]
    assert (iv["method"], iv["identities"], iv["pairs"], iv["fallback"]) == ("identity bootstrap", 2, 12, None)
    assert iv["cross_identity_pairs"] == 0 and iv["seed"] == 0
    assert len(first["pair_identity"]) == 12 and len(set(first["pair_identity"])) == 2
    assert (vs["method"], vs["identities"], vs["pairs"]) == ("identity bootstrap", 2, 12)
    # The scores file DVC compares holds numbers only; the protocol and the wall clock are in the record.
    flat = json.loads(Path("metrics/a.json").read_text())
    assert set(flat) == {"model", "copy_source", "mean_train_image", "held_out_targets"}
    assert all(isinstance(v, float) for scores in flat.values() for v in scores.values())
    assert flat["model"] == m and "seconds" in first and "protocol" in first
    # Every score written has its direction pinned in test_eval_metric_table (its statistics none).
    written = {k for scores in flat.values() for k in scores}
    assert {k for k in written if not is_statistic(k)} <= set(DEFAULT_PIPELINE)
    assert all(lookup(k).better is None for k in written if is_statistic(k))

    # Every test pair, in pairs-CSV order, saved as <from>_2_<to>.png.
    pairs_csv = next((root / "data/raw/tiny").glob("*-pairs-test.csv"))
    with open(pairs_csv) as fh:
        expected = [(r["from"], r["to"]) for r in csv.DictReader(fh)]
    with open("plots/a/per_pair.csv") as fh:
        got = [(r["from"], r["to"]) for r in csv.DictReader(fh)]
    assert got == expected and proto["pairs"] == len(expected)
    images = sorted(p.name for p in (root / "data/eval" / DATASET).glob("*.png"))
    assert images == sorted(f"{Path(a).stem}_2_{Path(b).stem}.png" for a, b in expected)
    for png in ("ssim_hist.png", "sample_grid.png", "training_curves.png"):
        assert (Path("plots/a") / png).stat().st_size > 1000
    # The real held-out targets' Fréchet distance is reported as the floor, apart from the baselines.
    assert set(first["floor"]) == {"held_out_targets"}
    assert set(first["floor"]["held_out_targets"]) == {"kid_effnet_lite1", "kid_effnet_lite1_std"}
    # Copying the source is a perfect score on nothing here, but it must be a valid score.
    assert 0 < first["baselines"]["copy_source"]["ssim"] < 1


def test_scores_and_images_do_not_depend_on_the_worker_count(in_project: tuple[Path, Path]) -> None:
    """Fault 15: the same checkpoint scored by one process and by two (each a part of the pairs)."""
    from pipelines import evaluate

    root, params = in_project
    docs, images, per_pair = {}, {}, {}
    for workers in (1, 2):
        tag = f"w{workers}"
        rc = evaluate.main(["--params", str(params), "--dataset", DATASET, "--no-mlflow",
                            "--set", "evaluate.threads=1", "--set", "evaluate.batch_size=2",
                            "--set", f"evaluate.workers={workers}",
                            "--metrics", f"metrics/{tag}.json", "--plots", f"plots/{tag}"])
        assert rc == 0
        docs[workers] = json.loads(Path(f"metrics/{tag}.protocol.json").read_text())
        images[workers] = {p.name: p.read_bytes() for p in (root / "data/eval" / DATASET).glob("*.png")}
        per_pair[workers] = Path(f"plots/{tag}/per_pair.csv").read_text()
    assert docs[1]["protocol"]["pairs"] > 2  # more than one batch, so two workers really split the pairs
    for key in ("model", "baselines", "protocol_sha256", "generator"):
        assert docs[1][key] == docs[2][key], key
    assert per_pair[1] == per_pair[2]
    assert images[1] == images[2] and len(images[1]) == docs[1]["protocol"]["pairs"]


def test_register_after_evaluate_makes_a_champion(in_project: tuple[Path, Path]) -> None:
    import mlflow

    from pipelines import register

    root, params = in_project
    doc = _evaluate(params, DATASET)
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlruns.db'}")
    # Under the default policy an untrained generator has no evidence of beating both baselines:
    # registered as candidate, no champion, and the receipt says which rule decided, with numbers.
    assert register.main(["--params", str(params), "--dataset", DATASET, "--set", "evaluate.threads=1"]) == 0
    refused = json.loads((root / "runs" / DATASET / f"registered-{DATASET}.json").read_text())
    assert not refused["promoted"] and refused["champion_version"] == ""
    assert refused["promotion"]["policy"] == "beyond_baselines_and_champion"
    assert set(refused["promotion"]["versus_baselines"]) == {"copy_source", "mean_train_image"}
    assert refused["reason"].startswith("not promoted under beyond_baselines_and_champion")
    assert str(client.get_model_version_by_alias("attnflow-pose", "candidate").version) == refused["version"]
    # The registry's mechanics under the plain rule: any gain (a first version always) promotes.
    args = ["--params", str(params), "--dataset", DATASET, "--set", "evaluate.threads=1",
            "--set", "register.promotion_policy=any_gain"]
    assert register.main(args) == 0
    champion = client.get_model_version_by_alias("attnflow-pose", "champion")
    assert champion.tags["dataset"] == DATASET
    assert champion.tags["protocol_sha256"] == doc["protocol_sha256"]
    out = json.loads((root / "runs" / DATASET / f"registered-{DATASET}.json").read_text())
    assert out["promoted"] and out["version"] == str(champion.version)
    # Its description is the model card, with the training budget from the checkpoint and its config.
    gen = doc["generator"]
    assert champion.description.startswith(f"# attnflow-pose v{champion.version}: pose transfer")
    assert f"{gen['images']} training images seen in {gen['step']} steps (batch " in champion.description

    # The same checkpoint again scores the same: a tie never moves the champion.
    assert register.main(args) == 0
    again = json.loads((root / "runs" / DATASET / f"registered-{DATASET}.json").read_text())
    assert not again["promoted"] and again["champion_version"] == out["version"]
    assert str(client.get_model_version_by_alias("attnflow-pose", "candidate").version) == again["version"]

    # The registered champion, evaluated through the registry, scores exactly what its checkpoint did.
    from pipelines import evaluate

    assert evaluate.main(["--params", str(params), "--dataset", DATASET, "--no-mlflow", "--set", "evaluate.threads=1",
                          "--model", "models:/attnflow-pose@champion", "--metrics", "metrics/registered.json",
                          "--plots", "plots/registered"]) == 0
    via_registry = json.loads(Path("metrics/registered.protocol.json").read_text())
    # The exported generator returns the image only, so the scores of its internal fields (flow and
    # attention end-point errors, branch choice) exist for the checkpoint alone; every other score,
    # the appearance transfer included, is the same.
    shared = set(via_registry["model"])
    assert {k: via_registry["model"][k] for k in shared} == {k: doc["model"][k] for k in shared}
    assert all(k.startswith(("flow_epe", "attn_epe", "branch_")) for k in set(doc["model"]) - shared), \
        sorted(set(doc["model"]) - shared)
    assert via_registry["protocol_sha256"] == doc["protocol_sha256"]

    # The same version is the column service too: its stored request (the first test pair) is
    # answered with a PNG of the model's size.
    import base64
    import io
    import sys

    import mlflow.pyfunc
    from PIL import Image

    saved = list(sys.path)  # loading prepends the model's code folder
    try:
        served = mlflow.pyfunc.load_model("models:/attnflow-pose@champion")
        answer = served.predict(served.input_example)
    finally:
        sys.path[:] = saved
    image = Image.open(io.BytesIO(base64.b64decode(answer["image"][0])))
    assert (image.height, image.width) == served.get_raw_model().image_size


def test_real_image_layers_are_computed_once_per_image_and_alone() -> None:
    import torch

    from pipelines.evaluation.scoring import RealImageLayers

    class Net:
        calls = 0

        def layers(self, images):
            Net.calls += 1
            assert images.shape[0] == 1  # one image at a time: no dependence on batch composition
            x = images.float()
            return [x, x.mean(dim=1, keepdim=True)]

    images = torch.randint(0, 255, (3, 3, 4, 2), dtype=torch.uint8)
    real = RealImageLayers(Net(), keep=2)
    got = real(["a", "b", "a"], images[[0, 1, 0]])
    assert Net.calls == 2 and got[0].shape == (3, 3, 4, 2) and got[1].shape == (3, 1, 4, 2)
    assert torch.equal(got[0][2], images[0].float()) and torch.equal(got[0][1], images[1].float())
    real(["c"], images[2:3])  # evicts "a", the oldest
    real(["b", "a"], images[[1, 0]])
    assert Net.calls == 4 and len(real.cache) == 2


def test_training_curves_csv_always_has_the_plotted_losses(tmp_path: Path) -> None:
    # A run still in its warm-up has logged no L1 or discriminator loss; dvc.yaml's "training
    # losses" plot reads those columns, so they are written (empty) all the same.
    import csv

    from pipelines.evaluation.plots import plot_training_curves

    curves = {"loss/g_total": [(10, 4.9), (20, 4.7)], "loss/sampling_correctness": [(10, 0.46), (20, 0.45)]}
    plot_training_curves(tmp_path / "c.png", tmp_path / "c.csv", curves, "warm-up only")
    rows = list(csv.DictReader(open(tmp_path / "c.csv")))
    assert {"step", "l1", "g_total", "d_total", "sampling_correctness"} <= set(rows[0])
    assert [r["g_total"] for r in rows] == ["4.9", "4.7"] and [r["l1"] for r in rows] == ["", ""]
