"""pipelines.runs: the run layout (local and bucket storage), the stage records' JSON round trips, the
generator source rule, and file:// as a local folder everywhere."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from datasets import storage
from pipelines.config.params import to_dict
from pipelines.runs.folder import RunFolder
from pipelines.runs.records import (
    EvaluationRecord,
    RecordError,
    RegistrationReceipt,
    TrainSummary,
    protocol_path,
    write_scores,
)
from pipelines.runs.source import GeneratorSource, SourceError
from tests.record_fixtures import evaluation_record

# What the training loop writes, in its order: fixed keys, the profiled phases after
# fraction_allreduce, the MLflow facts last.
SUMMARY = {
    "status": "completed", "error": None, "run_name": "r", "workers": 2, "device": "cpu",
    "batch_size_per_worker": 2, "images": 16, "steps": 4, "steps_this_session": 4, "images_this_session": 16,
    "images_per_s": 3.25, "time_to_first_step_s": 1.5, "time_per_step_s": 0.5, "images_per_s_steady": 4.0,
    "fraction_data": 0.25, "fraction_compute": 0.5, "fraction_allreduce": 0.125, "fraction_h2d": 0.0625,
    "fraction_forward_backward": 0.375, "skipped_steps": 0, "data_errors": 1, "restarts": 0,
    "first_losses": {"g_total": 2.0}, "final_losses": {"g_total": 1.0}, "feature_backbone": "effnet_lite0",
    "g_param_digests": ["ab", "ab"], "resumed_from_step": None,
    "skipped_checkpoints": [{"where": "s3://b/r/checkpoints/step-000000002", "reason": "truncated"}],
    "mlflow_run_id": "0123", "mlflow_records_pending": 0,
}


# -- layout ------------------------------------------------------------------------------------------


def test_local_layout_puts_checkpoints_beside_the_run_files(tmp_path: Path) -> None:
    run = RunFolder.of("r", "runs", tmp_path)
    base = tmp_path / "runs" / "r"
    assert run.path == base and run.name == "r"
    assert (run.summary, run.config, run.tracking, run.faults) == (
        base / "summary.json", base / "config.json", base / "tracking", base / "faults")
    assert run.grid(12) == base / "grids" / "step-0000012.png"
    assert run.registered("tiny") == base / "registered-tiny.json"
    assert run.checkpoints == str(base / "checkpoints") and not run.checkpoints_in_bucket
    assert run.receipt == Path(run.checkpoints)  # one tree: the receipt folder is the store
    assert run.store_root == str(base)
    assert base / "checkpoint_manager_snapshot.json" in run.attempt_state()
    assert RunFolder.at(base) == run
    # Relative to the working directory, as evaluate and ablation pass it to a subprocess.
    assert RunFolder.of("ablation-full-s0").checkpoints == "runs/ablation-full-s0/checkpoints"


def test_bucket_layout_keeps_the_receipt_local(tmp_path: Path) -> None:
    run = RunFolder.of("r", "s3://bucket/attnflow/runs/", tmp_path)
    assert run.checkpoints == "s3://bucket/attnflow/runs/r/checkpoints" and run.checkpoints_in_bucket
    assert run.store_root == "s3://bucket/attnflow/runs/r"
    assert run.receipt_location == tmp_path / "runs/r/checkpoints/location.txt"
    assert run.receipt_commit == tmp_path / "runs/r/checkpoints/COMMITTED.json"
    assert run.summary == tmp_path / "runs/r/summary.json"


def test_file_url_storage_is_a_local_folder(tmp_path: Path) -> None:
    run = RunFolder.of("r", f"file://{tmp_path}/store", Path("/elsewhere"))
    assert run.checkpoints == f"{tmp_path}/store/r/checkpoints" and not run.checkpoints_in_bucket


def test_runs_under_a_root_and_the_mlflow_run_id_of_their_summary(tmp_path: Path) -> None:
    assert RunFolder.under(tmp_path) == []
    b, a = RunFolder.of("b", root=tmp_path), RunFolder.of("a", root=tmp_path)
    b.path.mkdir(parents=True)
    a.path.mkdir(parents=True)
    (tmp_path / "runs" / "stray.txt").write_text("")
    assert [r.name for r in RunFolder.under(tmp_path)] == ["a", "b"]
    assert a.mlflow_run_id() is None
    TrainSummary.from_dict(SUMMARY).save(a.summary)
    assert a.mlflow_run_id() == "0123"
    a.registered("x").write_text("{}")
    assert a.registrations() == [a.path / "registered-x.json"] and b.registrations() == []


# -- records -------------------------------------------------------------------------------------------


def test_train_summary_writes_the_loops_json_byte_for_byte(tmp_path: Path) -> None:
    summary = TrainSummary.from_dict(SUMMARY)
    assert summary.phase_fractions == {"h2d": 0.0625, "forward_backward": 0.375} and summary.completed
    path = tmp_path / "summary.json"
    summary.save(path)
    assert path.read_text() == json.dumps(SUMMARY, indent=2)
    assert TrainSummary.load(path) == summary
    # Without MLflow there is no pending count, and no key for it.
    bare = {k: v for k, v in SUMMARY.items() if k != "mlflow_records_pending"}
    assert TrainSummary.from_dict(bare).to_dict() == bare and list(TrainSummary.from_dict(bare).to_dict()) == list(bare)


def test_a_summary_with_missing_or_unknown_keys_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({**{k: v for k, v in SUMMARY.items() if k != "steps"}, "colour": "red"}))
    with pytest.raises(RecordError, match=rf"{path}: not a TrainSummary \(missing steps; unknown colour\)"):
        TrainSummary.load(path)
    path.write_text("[1, 2]")
    with pytest.raises(RecordError, match="not a JSON object"):
        TrainSummary.load(path)


def test_evaluation_record_round_trip_and_the_scores_beside_it(tmp_path: Path) -> None:
    record = evaluation_record({"ssim": 0.5, "fd": float("nan"), "note": "x"},
                               baselines={"copy_source": {"ssim": 0.25}}, floor={"target_image": {"ssim": 1.0}},
                               plots=["plots/a.png"], mlflow_run_id=None)
    doc = record.to_dict()
    assert "portrait" not in doc and doc["mlflow_run_id"] is None and doc["plots"] == ["plots/a.png"]
    metrics = tmp_path / "metrics" / "tiny.json"
    record.save(protocol_path(metrics))
    write_scores(metrics, record.flat_scores())
    assert protocol_path(metrics) == tmp_path / "metrics" / "tiny.protocol.json"
    assert protocol_path(metrics).read_text() == json.dumps(doc, indent=2, sort_keys=True) + "\n"
    assert json.loads(metrics.read_text()) == {"model": {"ssim": 0.5}, "copy_source": {"ssim": 0.25},
                                               "target_image": {"ssim": 1.0}}
    again = EvaluationRecord.load(protocol_path(metrics)).to_dict()
    assert json.dumps(again, sort_keys=True) == json.dumps(doc, sort_keys=True)  # NaN != NaN, as text equal


def test_a_scored_folder_has_neither_plots_nor_a_run(tmp_path: Path) -> None:
    """``score`` writes no plots and logs to no run: both keys stay out of its record."""
    record = evaluation_record({"ssim": 0.5}, portrait={"landmark_nme": {}})
    doc = record.to_dict()
    assert "plots" not in doc and "mlflow_run_id" not in doc and doc["portrait"] == {"landmark_nme": {}}
    assert EvaluationRecord.from_dict(doc) == record
    with pytest.raises(RecordError, match="missing protocol_sha256"):
        EvaluationRecord.from_dict({k: v for k, v in doc.items() if k != "protocol_sha256"})


def test_registration_receipt_keeps_the_registrations_key_order(tmp_path: Path) -> None:
    doc = {"model_name": "attnflow-pose", "version": "3", "model_uri": "models:/attnflow-pose/3", "promoted": False,
           "reason": "not beyond noise", "champion_version": "1", "promotion": {"policy": "any_gain"},
           "primary_metric": "ssim", "value": 0.5, "protocol_sha256": "p" * 64}
    path = tmp_path / "registered-tiny.json"
    RegistrationReceipt.from_dict(doc).save(path)
    assert path.read_text() == json.dumps(doc, indent=2) + "\n"
    assert RegistrationReceipt.load(path).to_dict() == doc


# -- generator sources and the URL rule ----------------------------------------------------------------


def test_the_url_rule_treats_file_urls_as_local_folders(tmp_path: Path) -> None:
    from pipelines.training.checkpoint import CheckpointStore

    assert storage.is_url("s3://b/x") and storage.is_url("gs://b/x")
    assert not storage.is_url(f"file://{tmp_path}") and not storage.is_url(str(tmp_path))
    store = CheckpointStore(f"file://{tmp_path}/ck")
    assert store.root == f"{tmp_path}/ck" and store.where(store.root) == store.root
    store.save(1, {"w": torch.zeros(2)})
    assert [c.step for c in CheckpointStore(tmp_path / "ck").committed()] == [1]


def test_source_rule(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "MLmodel").write_text("flavors: {}\n")
    assert GeneratorSource.parse("models:/attnflow-pose@champion").kind == "model"
    assert GeneratorSource.parse("runs:/0123/generator_ema").kind == "model"
    assert GeneratorSource.parse(str(model_dir)).kind == "model"
    assert GeneratorSource.parse(f"file://{model_dir}").kind == "model"
    assert GeneratorSource.parse(str(tmp_path)) == GeneratorSource("checkpoint", str(tmp_path))
    assert GeneratorSource.parse("s3://b/runs/r/checkpoints").kind == "checkpoint"
    with pytest.raises(SourceError, match="expected a checkpoint folder, models:/"):
        GeneratorSource.parse(str(tmp_path / "nowhere"))
    with pytest.raises(SourceError, match="expected models:/NAME@ALIAS"):
        GeneratorSource.model(str(tmp_path))  # a folder without MLmodel is no model


def _tiny_checkpoint(root: Path) -> tuple[Path, torch.nn.Module]:
    from model.config import ModelConfig
    from model.generator import build_generator
    from pipelines.training.checkpoint import CheckpointStore

    torch.manual_seed(0)
    cfg = ModelConfig(base_channels=4, max_channels=8, attn_dim=8, flow_channels=4, combine_channels=4,
                      encoder_blocks=0, bottleneck_blocks=1, decoder_blocks=0, flow_depth=8)
    g = build_generator(cfg)
    config = {"model": to_dict(cfg), "train": {"dataset": "tiny"}, "preprocess": {"heatmap_sigma": 2.0},
              "datasets": {"tiny": {"image_size": [32, 24]}}}
    CheckpointStore(root / "checkpoints").save(3, {"gan": {"ema": g.state_dict()}, "config": config, "step": 3,
                                                   "images": 12})
    return root / "checkpoints", g


def test_a_checkpoint_loads_the_same_through_every_spelling(tmp_path: Path) -> None:
    from pipelines.training.restore import CheckpointGenerator, load_checkpoint_generator, load_generator

    folder, g = _tiny_checkpoint(tmp_path)
    plain = load_generator(GeneratorSource.parse(str(folder)))
    assert isinstance(plain, CheckpointGenerator)
    via_file_url = load_checkpoint_generator(f"file://{folder}")
    step = load_checkpoint_generator(str(folder / "step-000000003"))
    for loaded in (plain, via_file_url, step):
        assert loaded.info["path"] == str(folder / "step-000000003") and loaded.info["step"] == 3
        assert loaded.info["variant"] == "full" and loaded.state["step"] == 3
    packed = plain.as_packed()
    assert packed.image_size == (32, 24) and packed.heatmap_sigma == 2.0
    x = torch.rand(1, packed.in_channels, 32, 24)
    p = packed.pose_channels
    with torch.no_grad():
        assert torch.equal(packed(x), g.eval()(x[:, :3], x[:, 3:3 + p], x[:, 3 + p:]).image)
