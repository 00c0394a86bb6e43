"""The training loop in-process (``--workers 0``): a few steps, resume, NaN skipping, numerical stop."""
from __future__ import annotations

from pathlib import Path

import pytest
from train_fixtures import make_tiny_project, metric_steps, read_summary

from pipelines import train
from pipelines.training.checkpoint import CheckpointStore, non_finite_tensors


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("trainproj")
    return root, make_tiny_project(root)


@pytest.fixture(autouse=True)
def _env(project: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNFLOW_ROOT", str(project[0]))
    for key in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "ATTNFLOW_FAULTS"):
        monkeypatch.delenv(key, raising=False)


def _train(project: tuple[Path, Path], run: str, *sets: str) -> int:
    args = ["--params", str(project[1]), "--workers", "0", "--run-name", run]
    for s in sets:
        args += ["--set", s]
    return train.main(args)


def _assert_checkpoints_finite(root: Path, run: str) -> list[int]:
    store = CheckpointStore(root / "runs" / run / "checkpoints")
    steps = []
    for info in store.committed():
        state = store.load(info)
        assert non_finite_tensors(state["gan"]) == []
        steps.append(info.step)
    return steps


def test_runs_resumes_and_tracks(project: tuple[Path, Path]) -> None:
    root, _ = project
    assert _train(project, "a") == 0
    s = read_summary(root, "a")
    assert s["status"] == "completed" and s["images"] == 16 and s["steps"] == 8 and s["skipped_steps"] == 0
    assert s["resumed_from_step"] is None and s["mlflow_records_pending"] == 0
    assert set(s["final_losses"]) >= {"l1", "g_total", "d_total"}
    assert _assert_checkpoints_finite(root, "a") == [4, 8]  # every 8 images = 4 steps, keep 2
    grids = sorted(p.name for p in (root / "runs/a/grids").glob("*.png"))
    assert grids == ["step-0000001.png", "step-0000004.png", "step-0000008.png"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlruns.db'}")
    run = client.get_run(s["mlflow_run_id"])
    assert run.data.params["train.batch_size"] == "2" and run.data.params["model.base_channels"] == "8"
    assert run.data.tags["feature_backbone"] == "none" and len(run.data.tags["manifest_sha256"]) == 64
    assert metric_steps(root, s["mlflow_run_id"]) == [2, 4, 6, 8]
    artifacts = {a.path for a in client.list_artifacts(s["mlflow_run_id"])}
    assert {"grids", "checkpoint", "config.json"} <= artifacts

    # Same name, more images: continues from step 8 into the same MLflow run.
    assert _train(project, "a", "train.total_images=24") == 0
    s2 = read_summary(root, "a")
    assert s2["resumed_from_step"] == 8 and s2["steps"] == 12 and s2["steps_this_session"] == 4
    assert s2["mlflow_run_id"] == s["mlflow_run_id"]
    assert metric_steps(root, s["mlflow_run_id"]) == [2, 4, 6, 8, 10, 12]

    # A fresh name starts from scratch.
    assert _train(project, "a-fresh", "train.total_images=8") == 0
    s3 = read_summary(root, "a-fresh")
    assert s3["resumed_from_step"] is None and s3["steps"] == 4 and s3["mlflow_run_id"] != s["mlflow_run_id"]


def test_resume_with_other_model_params_is_refused(project: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    assert _train(project, "b", "train.total_images=8") == 0
    rc = _train(project, "b", "train.total_images=16", "model.base_channels=4")
    assert rc == 2
    assert "trained with different model params" in capsys.readouterr().err


def test_nan_step_is_skipped_and_counted(project: tuple[Path, Path]) -> None:
    root, _ = project
    assert _train(project, "nan", "train.faults.nan_at_step=3", "train.faults.nan_rank=0") == 0
    s = read_summary(root, "nan")
    assert s["status"] == "completed" and s["steps"] == 8 and s["skipped_steps"] == 1
    assert _assert_checkpoints_finite(root, "nan") == [4, 8]
    from mlflow.tracking import MlflowClient

    skipped = MlflowClient(f"sqlite:///{root / 'mlruns.db'}").get_metric_history(s["mlflow_run_id"],
                                                                                 "train/skipped_steps")
    assert max(m.value for m in skipped) == 1.0


def test_consecutive_faults_stop_the_run(project: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    root, _ = project
    rc = _train(project, "diverge", "train.faults.nan_at_step=2", "train.faults.nan_rank=0",
                "train.faults.nan_steps=5", "train.max_consecutive_skips=3")
    assert rc == 1
    s = read_summary(root, "diverge")
    assert s["status"] == "numerical_fault" and s["skipped_steps"] == 3 and s["steps"] == 4
    assert "3 consecutive steps" in capsys.readouterr().err
    # Step 4 would have been a checkpoint; none is written once the run stops on faults.
    assert _assert_checkpoints_finite(root, "diverge") == []


def test_loader_workers_feed_a_run_across_epochs(project: tuple[Path, Path]) -> None:
    # Two persistent loader workers handing batches over in shared memory, augmentation on, over
    # several epochs (24 pairs = 12 batches each), with the profiled step-time breakdown.
    root, params = project
    args = ["--params", str(params), "--workers", "0", "--run-name", "lw", "--profile-comm",
            "--set", "train.loader_workers=2", "--set", "train.augment=true", "--set", "train.total_images=56"]
    assert train.main(args) == 0
    s = read_summary(root, "lw")
    assert s["status"] == "completed" and s["steps"] == 28 and s["skipped_steps"] == 0 and s["data_errors"] == 0
    assert 0 < s["fraction_expand"] <= s["fraction_data"] and s["fraction_forward_backward"] > 0
    assert _assert_checkpoints_finite(root, "lw") == [24, 28]
