"""``dvc repro portrait/dvc.yaml`` end to end on a tiny profile, in a temporary copy (about a minute).

The path `make run-portrait` takes: synthesize and preprocess the portraits (root dvc.yaml), train,
evaluate (landmark-following error, editing grid) and register ``attnflow-portrait``; then the
editing CLI loads the champion from the registry, and the report `make run-portrait` ends with reads
the scores the pipeline wrote. In the default suite, beside the root pipeline's end-to-end test.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.test_pipeline_e2e import make_repo_copy, stages_run

# The tiny profile gives the data stages their smallest sizes; the portrait pipeline's own
# params file gets a tiny model and budget (its sections replace params.yaml's whole).
TINY_PORTRAIT = {
    "model.base_channels": 8, "model.max_channels": 16, "model.flow_channels": 4, "model.attn_dim": 8,
    "model.combine_channels": 4, "model.disc_channels": 4, "model.face_disc_channels": 4,
    "train.workers": 0, "train.batch_size": 2, "train.total_images": 8, "train.checkpoint_every_images": 8,
}


def test_portrait_pipeline_trains_evaluates_and_registers(tmp_path):
    work = tmp_path / "repo"
    work.mkdir()
    # A tiny budget earns no evidence against the baselines: the plain promotion rule here, so the
    # editing CLI below has a champion to load (the default policy is tested in test_registry_promotion).
    env = make_repo_copy(work, {"loss.backbone": "none", "register.promotion_policy": "any_gain"}, profile="tiny",
                         files={"portrait/params.yaml": TINY_PORTRAIT}, OMP_NUM_THREADS="1")
    dvc = Path(sys.executable).parent / "dvc"
    proc = subprocess.run([str(dvc), "repro", "portrait/dvc.yaml"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=1500)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    ran = stages_run(proc.stdout)
    assert {"synthesize@synthetic_portrait", "preprocess@synthetic_portrait", "portrait/dvc.yaml:portrait_train",
            "portrait/dvc.yaml:portrait_landmarks", "portrait/dvc.yaml:portrait_evaluate",
            "portrait/dvc.yaml:portrait_register"} <= set(ran), ran
    assert not any("fashion" in s or "market" in s for s in ran), ran

    doc = json.loads((work / "metrics/portrait.protocol.json").read_text())
    assert doc["task"] == "portrait" and "landmark_nme" in doc["model"]
    assert all("landmark_nme" in s for s in doc["baselines"].values())
    assert doc["protocol"]["landmark_following"]["regressor"]["weights_sha256"]
    assert (work / "plots/portrait/editing_grid.png").is_file()
    # `make run-portrait`'s last step, on the scores file the pipeline itself wrote: a format change
    # between evaluate and the report fails here, not after a user's 15-minute run.
    report = subprocess.run([sys.executable, "-m", "pipelines.portrait_eval", "report", "metrics/portrait.json"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert report.stdout.startswith("synthetic_portrait: "), report.stdout
    assert "copy_source" in report.stdout and "landmark_nme" in report.stdout, report.stdout
    config = json.loads((work / "runs/portrait/config.json").read_text())
    assert config["model"]["pose_channels"] == 8  # portrait/params.yaml's, recorded with the run
    assert config["profile"] == "portrait-cpu"
    reg = json.loads((work / "runs/portrait/registered-synthetic_portrait.json").read_text())
    assert reg["model_name"] == "attnflow-portrait" and reg["champion_version"] == reg["version"]

    # The registered champion edits a held-out face in a fresh process.
    test_dir = work / "data/raw/synthetic_portrait/test"
    face = sorted(test_dir.glob("*.jpg"))[0]
    out = work / "edited.png"
    edit = subprocess.run([sys.executable, "-m", "pipelines.edit_portrait", "--model",
                           "models:/attnflow-portrait@champion", "--image", str(face), "--landmarks",
                           f"{work}/data/raw/synthetic_portrait/portrait-landmarks-test.csv#{face.name}",
                           "--smile", "0.8", "--out", str(out)], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)
    assert edit.returncode == 0, edit.stderr[-3000:]
    assert out.is_file()
    assert stages_run(subprocess.run([str(dvc), "repro", "portrait/dvc.yaml"], cwd=work, env=env,
                                      capture_output=True, text=True, timeout=600).stdout) == []
