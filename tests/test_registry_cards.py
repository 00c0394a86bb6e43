"""Model cards: the Markdown a registered version and its registered model carry (pure functions)."""
from __future__ import annotations

import json

import pytest

from pipelines.registry import cards
from pipelines.serving.contract import INPUTS, OUTPUTS

PROTOCOL = "c361187e525011e20101c303c776a8a4fe270c3f9ec84de69153bda8006d0a6c"
POSE_SHAPE = cards.ModelShape("pose", (128, 88), 18)
PORTRAIT_SHAPE = cards.ModelShape("portrait", (64, 64), 8)
POINTS = json.dumps([[10.5 + i, 20.25 + 2 * i] for i in range(17)] + [None])


def metrics_doc(masked: bool = False, portrait: bool = False) -> dict:
    """A metrics JSON as pipelines.evaluate writes it (the parts the card reads)."""
    model = {"ssim": 0.7070749431711602, "psnr": 16.594645755140828, "fd_effnet_lite0": 5.376360786941436,
             "lpd_effnet_lite0": 2.4732270043268634}
    if masked:
        model.update({f"masked_{k}": v for k, v in list(model.items())})
    if portrait:
        model["landmark_nme"] = 0.0812
    doc = {
        "dataset": "synthetic_fashion",
        "model": model,
        "baselines": {"copy_source": {k: v * 0.8 for k, v in model.items()},
                      "mean_train_image": {k: v * 0.9 for k, v in model.items()}},
        "floor": {"held_out_targets": {"fd_effnet_lite0": 1.444373660949502}},
        "generator": {"source": "checkpoint", "images": 640, "step": 80, "variant": "full",
                      "state_sha256": "62fa6a1ddb739fcfd8890d487a8b1aadcb9e812810ebd0a8c4d6014b3d2b95f6"},
        "protocol": {"dataset": "synthetic_fashion", "layout": "deepfashion", "pairs": 96, "image_size": [128, 88],
                     "reference_set": {"count": 192}, "masked": {"enabled": masked},
                     "feature_extractors": {"fd": {"name": "effnet_lite0"}, "lpd": {"name": "effnet_lite0"}}},
        "protocol_sha256": PROTOCOL,
        "mlflow_run_id": "a2c077e5c4014a90a67cd1cfba1b4867",
    }
    if portrait:
        doc["portrait"] = {"landmark_nme": {"model": 0.0812, "target_image": 0.0301}}
    return doc


def card(**overrides) -> str:
    kwargs = dict(model_name="attnflow-pose", version="3", shape=POSE_SHAPE, metrics_doc=metrics_doc(),
                  primary_metric="ssim", promoted=False, champion_version="1",
                  reason="ssim 0.707075 does not beat champion v1's 0.707075 (same protocol)",
                  run_id="a2c077e5c4014a90a67cd1cfba1b4867", experiment_id="1", model_id="m-0123abcd",
                  evaluation_files=["per_pair.csv", "ssim_hist.png", "sample_grid.png", "synthetic_fashion.json"],
                  training={"dataset": "synthetic_fashion", "layout": "deepfashion", "synthetic": True,
                            "batch_size": 4, "workers": 2, "total_images": 640},
                  request_example={"target_keypoints": POINTS})
    kwargs.update(overrides)
    return cards.version_card(**kwargs)


def test_version_card_has_every_section() -> None:
    text = card()
    assert text.startswith("# attnflow-pose v3: pose transfer\n")
    for heading in ("## Promotion", "## Scores", "## Training", "## Request (python_function flavour)",
                    "## Tensor (pytorch flavour)", "## Evaluation files", "## Use it"):
        assert f"\n{heading}\n" in text, heading
    # The contract: every request column with its type and whether it is required, the response.
    for col in INPUTS["pose"]:
        assert f"`{col.name}` ({col.type}, {'required' if col.required else 'optional'})" in text
    assert "`image` (string, always): the generated image, base64 PNG, 128×88 (H×W)" in text
    for col in OUTPUTS:  # the pose service answers every response column (combination_maps on request)
        assert f"`{col.name}` ({col.type}, " in text
    assert "float32 `[B, 39, 128, 88]`" in text and "output `[B, 3, 128, 88]`" in text
    # Training data and budget, from the checkpoint info and the training config.
    assert "`synthetic_fashion` (deepfashion, synthetic), 192 training images, at 128×88 (H×W)" in text
    assert "640 training images seen in 80 steps (batch 4 per worker × 2 workers), 3.33 epochs" in text
    assert "step 80, variant `full`, sha256 `62fa6a1ddb73`" in text
    # The protocol hash in full, the decision, how to call it.
    assert f"`{PROTOCOL}`" in text
    assert "**candidate** only, champion stays v1: ssim 0.707075 does not beat" in text
    assert 'mlflow.pyfunc.load_model("models:/attnflow-pose/3")' in text
    assert "mlflow models serve -m models:/attnflow-pose@champion --env-manager local -h 127.0.0.1 -p 5001" in text
    assert "curl -s http://127.0.0.1:5001/invocations" in text and '{"dataframe_records": [{' in text
    assert f"the first test pair's: `{POINTS}`" in text
    # The UI cuts preformatted lines instead of wrapping them: code stays within 100 characters.
    code = text.split("## Use it")[1]
    assert max(len(line) for line in code.splitlines() if not line.startswith("`pose.json`")) <= 100
    assert len(text) <= cards.MAX_DESCRIPTION


def test_scores_of_model_baselines_and_floor_are_formatted() -> None:
    block = cards.scores_block(metrics_doc(), "ssim")
    lines = block.splitlines()
    assert lines[0] == "```text" and lines[-1] == "```"
    assert lines[1].split() == ["metric", "model", "copy_source", "mean_train_image", "floor"]
    rows = {line.split()[0]: line.split() for line in lines[2:-1]}
    assert lines[2].startswith("ssim ↑ *")  # the primary metric first, marked
    assert rows["ssim"][-4:] == ["0.7071", "0.5657", "0.6364", "–"]
    assert rows["fd_effnet_lite0"][1:] == ["↓", "5.376", "4.301", "4.839", "1.444"]
    assert rows["psnr"][1:] == ["↑", "16.59", "13.28", "14.94", "–"]
    # Columns line up: every row as wide as the header.
    assert len({len(line) for line in lines[1:-1]}) == 1
    assert cards.fmt(float("nan")) == "–" and cards.fmt(None) == "–" and cards.fmt(1234567.0) == "1.235e+06"


def test_promoted_version_and_a_minimal_metrics_doc() -> None:
    text = card(promoted=True, reason="no champion yet", champion_version="3",
                metrics_doc={"model": {"ssim": 0.5}, "protocol_sha256": "p" * 64}, training=None,
                experiment_id=None, model_id=None, evaluation_files=[], request_example=None)
    assert "promoted to **champion**: no champion yet." in text and "`ssim` = 0.5 (higher is better)" in text
    assert "`" + "p" * 64 + "`" in text and "## Evaluation files" not in text
    assert "`pose.json` holds the target pose, 18 `[x, y]` in the model's frame." in text


def test_evaluation_files_link_into_the_ui() -> None:
    text = card()
    run = "#/experiments/1/runs/a2c077e5c4014a90a67cd1cfba1b4867/artifacts/evaluation/"
    assert f"[sample_grid.png]({run}sample_grid.png)" in text and f"[ssim_hist.png]({run}ssim_hist.png)" in text
    assert "`per_pair.csv`" in text and "(#/experiments/1/models/m-0123abcd/artifacts)" in text
    assert "`extra_files/`" in text


def test_portrait_card_with_masked_scores_stays_within_mlflows_limit() -> None:
    text = card(model_name="attnflow-portrait", shape=PORTRAIT_SHAPE, metrics_doc=metrics_doc(True, True),
                primary_metric="landmark_nme", request_example=None,
                evaluation_files=["per_pair.csv", "ssim_hist.png", "sample_grid.png", "landmark_nme_hist.png",
                                  "editing_grid.png", "training_curves.png", "training_curves.csv", "portrait.json"])
    assert len(text) <= cards.MAX_DESCRIPTION
    assert text.startswith("# attnflow-portrait v3: portrait editing")
    for col in INPUTS["portrait"]:
        assert f"`{col.name}`" in text
    assert "(double, optional)" in text and "face part maps (8, in [0, 1])" in text
    assert "combination_maps" not in text  # portrait requests cannot ask for it
    row = next(line for line in text.splitlines() if line.startswith("landmark_nme"))
    assert row.split()[1:] == ["↓", "*", "0.0812", "0.06496", "0.07308", "0.0301"]
    assert "masked_ssim ↑" in text


def test_registered_model_card_names_the_champion() -> None:
    champ = cards.champion_summary("1", {"primary_metric": "ssim", "primary_metric_value": "0.7070749431711602",
                                         "protocol_sha256": PROTOCOL, "dataset": "synthetic_fashion"})
    text = cards.registered_model_card(model_name="attnflow-pose", shape=POSE_SHAPE, champion=champ,
                                       candidate_version="3", request_example={"target_keypoints": POINTS})
    assert text.startswith("# attnflow-pose: pose transfer\n")
    assert ("**champion** is v1, ssim 0.7071 on `synthetic_fashion` (protocol `c361187e5250`): "
            "`models:/attnflow-pose@champion`.") in text
    assert "**candidate** is v3" in text and "## Request (python_function flavour)" in text
    assert 'mlflow.pyfunc.load_model("models:/attnflow-pose@champion")' in text and POINTS in text
    assert len(text) <= cards.MAX_DESCRIPTION
    none = cards.registered_model_card(model_name="attnflow-portrait", shape=PORTRAIT_SHAPE, champion=None)
    assert "No **champion** yet." in none and '"smile": 0.5' in none


def test_a_card_too_long_for_mlflow_drops_its_links() -> None:
    many = [f"plot_{i:02d}_with_a_long_descriptive_name.png" for i in range(15)]
    text = card(evaluation_files=many)
    assert len(text) <= cards.MAX_DESCRIPTION
    assert "`plot_14_with_a_long_descriptive_name.png`" in text and "](#/experiments/" not in text
    assert "## Request (python_function flavour)" in text  # the contract stays while it fits
    cut = cards.fit("x" * 6000)
    assert len(cut) <= cards.MAX_DESCRIPTION and cut.endswith("(cut to MLflow's description limit)\n")


def test_unknown_task_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        card(shape=cards.ModelShape("hands", (64, 64), 21))


def test_score_families_are_one_table_each_and_a_full_portrait_card_fits() -> None:
    edits = ("rotate", "mouth_open", "smile", "eyes_closed", "brows", "shift")
    regions = ("brows", "clothing", "earrings", "eyes", "glasses", "hair", "lips", "mouth", "skin")
    doc = metrics_doc(portrait=True)
    for method, scores in [("model", doc["model"]), *doc["baselines"].items()]:
        base = 0.5 if method == "model" else 0.0
        scores.update({f"appearance_de00_{r}": 10.0 + i for i, r in enumerate(regions)})
        for score in ("ssim", "changed_l1", "nme", "lm_reached"):
            scores.update({f"edit_{score}_{e}": 0.25 + i for i, e in enumerate(edits)})
        scores.update({f"edit_reached_{e}": base for e in edits})
        scores.update({"flow_epe_s2": 3.1, "flow_epe_s4": 3.0, "flow_epe_s8": 2.9})
    block = cards.scores_block(doc, "ssim")
    lines = block.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("appearance_de00_<garment> ↓"))
    assert lines[head].split()[2:] == list(regions)
    assert lines[head + 1].split() == ["model", *(f"{10.0 + i:g}" for i in range(len(regions)))]
    reached = next(i for i, line in enumerate(lines) if line.startswith("edit_reached_<edit> ↑"))
    assert lines[reached + 1].split()[0] == "model" and not lines[reached + 2].strip()  # baselines' zeros left out
    assert not any(line.startswith(("edit_nme", "edit_lm_reached", "edit_ssim")) for line in lines)
    assert "Also in the metrics file: edit_lm_reached_<edit>, edit_nme_<edit>, edit_ssim_<edit>." in block
    assert not any(line.startswith("appearance_de00_hair") for line in lines)  # no row per member
    files = ["per_pair.csv", "ssim_hist.png", "sample_grid.png", "correspondence_parts.png", "correspondence_flow.png",
             "landmark_nme_hist.png", "editing_grid.png", "edit_scores.png", "training_curves.png",
             "training_curves.csv", "portrait.json", "portrait.protocol.json"]
    text = card(model_name="attnflow-portrait", shape=PORTRAIT_SHAPE, metrics_doc=doc, request_example=None,
                evaluation_files=files)
    assert len(text) <= cards.MAX_DESCRIPTION and "cut to MLflow" not in text
    assert "edit_changed_l1_<edit> ↓" in text and "## Use it" in text
