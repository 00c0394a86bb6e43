"""The serving benchmark's pure parts (figures, the request, the in-process breakdown) on a tiny
untrained model; the run through ``mlflow models serve`` is the slow test at the end."""
from __future__ import annotations

import io
import json
import math
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from datasets.pose.keypoints import NUM_JOINTS
from pipelines.bench import serve as bench
from pipelines.serving import contract
from pipelines.serving import server as serving_server
from tests.test_serving_pyfunc import POSE_SIZE, save_served, tiny_generator


@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_percentile_interpolates_like_numpy(n: int) -> None:
    xs = list(np.random.default_rng(n).exponential(100.0, n))
    for q in (0, 50, 95, 99, 100):
        assert bench.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert math.isnan(bench.percentile([], 50))
    with pytest.raises(ValueError):
        bench.percentile(xs, 101)


def test_summary_in_ms_and_rate_over_the_wall_time() -> None:
    s = bench.summarize([0.1, 0.2, 0.3, 0.4], wall_s=2.0, errors=1)
    assert s["requests"] == 4 and s["errors"] == 1
    assert s["p50_ms"] == 250.0 and s["p95_ms"] == pytest.approx(385.0)
    assert s["mean_ms"] == 250.0 and s["max_ms"] == 400.0 and s["requests_per_s"] == 2.0
    empty = bench.summarize([], wall_s=1.0, errors=3)
    assert empty["requests"] == 0 and empty["requests_per_s"] == 0.0 and math.isnan(empty["p50_ms"])


def test_shares_add_up_with_other_and_never_go_negative() -> None:
    s = bench.shares({"decode": 10.0, "generator": 60.0}, 100.0)
    assert s == {"decode": 0.1, "generator": 0.6, "other": 0.3}
    assert bench.shares({"decode": 60.0, "generator": 60.0}, 100.0)["other"] == 0.0


def test_request_row_and_body_follow_the_contract() -> None:
    photo = bench.astronaut()
    target, frame = bench.FALLBACK_TARGET
    row = bench.build_request(photo, bench.ASTRONAUT_KEYPOINTS, target, frame)
    # Every column of a keypoint request (the photo-target and maps columns are not what it times).
    assert set(row) == {c.name for c in contract.INPUTS[contract.POSE]} - {"target_image", "return_maps"}
    assert np.array_equal(contract.decode_image(row["source_image"]), photo)  # PNG: lossless
    src = contract.decode_points(row["source_keypoints"], "source_keypoints", NUM_JOINTS)
    assert np.array_equal(src, np.asarray(bench.ASTRONAUT_KEYPOINTS, float))  # -1 -> null -> -1
    assert json.loads(row["source_keypoints"])[4] is None
    tgt = contract.decode_points(row["target_keypoints"], "target_keypoints", NUM_JOINTS)
    assert np.array_equal(tgt, np.asarray(target, float)) and contract.decode_size(row["target_size"]) == frame
    assert json.loads(bench.request_body(row)) == {"dataframe_records": [row]}


def _fake_shards(root: Path, keypoints: list[list[float]]) -> Path:
    """A manifest and one test shard holding one sample of two views (only what parse_sample reads)."""
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"image_size": [128, 88]}))
    members = {"s0.meta.json": json.dumps({"names": ["a.jpg", "b.jpg"], "pairs": [[0, 1]]})}
    for i, kp in enumerate([[[-1, -1]] * NUM_JOINTS, keypoints]):
        members[f"s0.v{i}.kp.json"] = json.dumps({"name": f"view{i}", "keypoints": kp, "face_box": [0, 0, 1, 1],
                                                   "face_valid": False})
        for part in ("jpg", "pose.bin", "face.jpg"):
            members[f"s0.v{i}.{part}"] = "x"
    with tarfile.open(root / "test-000000.tar", "w") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return root


def test_target_pose_comes_from_the_first_test_pair_or_is_none(tmp_path: Path) -> None:
    kp = [[10.0 + i, 20.0 + 2 * i] for i in range(NUM_JOINTS)]
    found = bench.shard_target(_fake_shards(tmp_path / "shards", kp))
    assert found is not None
    points, frame, origin = found
    assert np.array_equal(points, np.asarray(kp)) and frame == (128, 88) and "view1" in origin
    assert bench.shard_target(tmp_path / "absent") is None and bench.shard_target(None) is None


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench-serve") / "pose"
    save_served(path, "pose")
    return path


def test_breakdown_times_the_service_steps_and_reproduces_its_image(tiny_model: Path) -> None:
    pyfunc = bench.load_service(str(tiny_model))
    row = bench.build_request(bench.astronaut(), bench.ASTRONAUT_KEYPOINTS, *bench.FALLBACK_TARGET)
    ticks = iter(range(10_000))
    r = bench.time_breakdown(pyfunc, row, repeats=2)
    assert r["matches_service"] and r["repeats"] == 2
    assert r["model_size"] == list(POSE_SIZE) and r["source_size"] == [512, 512]
    assert set(r["stage_ms"]) == set(bench.STAGES) and set(r["shares"]) == {*bench.STAGES, "other"}
    assert r["predict_ms"] > 0 and all(v >= 0 for v in r["stage_ms"].values())
    assert all(0 <= v for v in r["shares"].values())
    # With a clock that ticks once a call every stage takes one tick, and generate's two pose maps
    # are subtracted from the generator.
    fake = bench.time_breakdown(pyfunc, row, repeats=1, clock=lambda: next(ticks) / 1e3)
    assert fake["stage_ms"] == {"decode": 1.0, "framing": 1.0, "pose_maps": 1.0, "generator": 0.0, "encode": 1.0}
    assert fake["predict_ms"] == 1.0


def test_a_model_without_the_column_service_is_refused(tmp_path: Path) -> None:
    import mlflow.pytorch

    path = tmp_path / "tensor-only"
    mlflow.pytorch.save_model(tiny_generator(NUM_JOINTS, POSE_SIZE), str(path), pip_requirements=["torch"],
                              serialization_format="pickle")
    with pytest.raises(bench.NotTheService, match="mlflow.pytorch.*register it again"):
        bench.load_service(str(path))


def test_server_runs_on_loopback_without_the_repository_on_its_path(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///rel/mlruns.db")
    monkeypatch.chdir(tmp_path)
    server = serving_server.Server("some-folder", 5123, tmp_path, threads=2)
    cmd = server.command()
    assert cmd[cmd.index("-h") + 1] == "127.0.0.1" and cmd[cmd.index("-p") + 1] == "5123"
    assert cmd[cmd.index("--env-manager") + 1] == "local" and cmd[cmd.index("-m") + 1] == str(tmp_path / "some-folder")
    env = server.environment()
    assert "PYTHONPATH" not in env and env["OMP_NUM_THREADS"] == "2"
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path}/rel/mlruns.db"
    assert serving_server.absolute_tracking_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert serving_server.absolute_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert serving_server.absolute_model("models:/attnflow-pose@champion") == "models:/attnflow-pose@champion"
    server.stop()  # never started: nothing to do


def test_a_server_that_never_answers_is_stopped_and_its_log_shown(monkeypatch, tmp_path: Path) -> None:
    sleeper = [sys.executable, "-c", "import time; print('still starting', flush=True); time.sleep(120)"]
    monkeypatch.setattr(serving_server.Server, "command", lambda self: sleeper)
    server = serving_server.Server("m", serving_server.free_port(), tmp_path, start_timeout_s=1.5)
    with pytest.raises(RuntimeError, match="did not answer /ping within 2 s:\n.*still starting"), server:
        pass
    assert server.proc is not None and server.proc.poll() is not None  # stopped, not left running
    monkeypatch.setattr(serving_server.Server, "command", lambda self: [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="exited with 3"):
        serving_server.Server("m", serving_server.free_port(), tmp_path, start_timeout_s=30).__enter__()


def test_answers_other_than_200_raise_with_the_servers_message() -> None:
    ok = json.dumps({"predictions": [{"image": "abc"}]}).encode()
    assert bench.answer_image(200, ok) == "abc"
    with pytest.raises(RuntimeError, match="HTTP 400: target_keypoints: bad"):
        bench.answer_image(400, json.dumps({"error_code": "INVALID_PARAMETER_VALUE",
                                            "message": "target_keypoints: bad"}).encode())
    with pytest.raises(RuntimeError, match="not JSON"):
        bench.answer_image(502, b"<html>")


def test_table_renders_each_client_count_and_stage() -> None:
    stage_ms = {"decode": 5.0, "framing": 1.0, "pose_maps": 2.0, "generator": 80.0, "encode": 2.0}
    report = {
        "model": "models:/attnflow-pose@champion", "model_version": "3",
        "machine": {"cores": 2, "cores_usable": 2, "torch": "2", "torch_threads": 2, "mlflow": "3"},
        "load_average_start": (1.0, 1.0, 1.0), "load_average_end": (1.5, 1.0, 1.0),
        "request": {"source_image": "astronaut 512x512", "body_bytes": 500_000, "target_pose": "fixed"},
        "servers": {"mlflow": {"engine": "mlflow models serve", "workers": 1, "threads": 2, "startup_s": 12.0},
                    "ray": {"engine": "Ray Serve", "replicas": 2, "threads_per_replica": 1, "max_batch_size": 8,
                            "batch_wait_timeout_s": 0.01, "startup_s": 30.0}},
        "breakdown": {"repeats": 10, "predict_ms": 100.0, "stage_ms": stage_ms,
                      "shares": bench.shares(stage_ms, 100.0), "matches_service": True, "model_size": [128, 88]},
        "http": [{"engine": e, "clients": c, "requests": 40, "errors": 0, "p50_ms": 120.0 * c * f,
                  "p95_ms": 150.0 * c * f, "requests_per_s": 8.0 / f} for e, f in (("mlflow", 1.0), ("ray", 0.5))
                 for c in (1, 8)],
        "http_overhead_ms": {"mlflow": 20.0, "ray": 25.0},
        "batching": {"batch": 8, "threads": 1, "batched_ms": 400.0, "one_by_one_ms": 480.0, "speedup": 1.2},
    }
    report["ray_vs_mlflow"] = bench.compare_engines(report["http"])
    assert report["ray_vs_mlflow"]["8"] == {"requests_per_s_ratio": 2.0, "p95_ratio": 0.5}
    table = bench.format_table(report)
    assert "| mlflow | 1 | 40 | 0 | 120 | 150 | 8.00 |" in table and "| mlflow | 8 | 40 | 0 | 960 | 1200 | 8.00 |" in table
    assert "| ray | 8 | 40 | 0 | 480 | 600 | 16.00 |" in table and "ray / mlflow at 8 client(s): 2.00x" in table
    assert "8 requests at once 400 ms, one by one 480 ms (1.20x)" in table
    assert "| generator (tensors, forward, image) | 80.0 | 80.0% |" in table
    assert "| other (DataFrame, schema) | 10.0 | 10.0% |" in table and "(v3)" in table


@pytest.mark.slow
def test_the_benchmark_serves_a_tiny_model_over_http(tiny_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench-serve.json"
    code = bench.main(["--model", str(tiny_model), "--engine", "mlflow", "--requests", "4", "--clients", "1", "2", "--warmup", "1",
                       "--repeats", "2", "--shards", str(tmp_path / "none"), "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    report = json.loads(out.read_text())
    assert [h["clients"] for h in report["http"]] == [1, 2]
    assert all(h["requests"] == 4 and h["errors"] == 0 and h["p95_ms"] >= h["p50_ms"] > 0 for h in report["http"])
    assert report["servers"]["mlflow"]["host"] == "127.0.0.1" and report["breakdown"]["matches_service"]
    assert report["request"]["target_pose"].startswith("fixed")
    assert isinstance(report["servers"]["mlflow"]["same_image_as_in_process"], bool)
    assert "| mlflow | 2 | 4 | 0 |" in text


def test_cpu_figures_give_the_ceiling_the_cores_allow():
    figures = bench.cpu_figures(cpu_s=4.0, answered=40, wall_s=2.0, cores=2)
    assert figures == {"server_cpu_ms_per_request": 100.0, "server_cores_busy": 2.0, "cpu_bound_requests_per_s": 20.0}
    assert bench.cpu_figures(cpu_s=1.0, answered=0, wall_s=2.0, cores=2) == {}


def test_server_cpu_counts_other_processes_not_this_one():
    import subprocess
    import sys

    with bench.ServerCpu() as own:
        sum(i * i for i in range(3_000_000))  # this process's work: not the server's
    with bench.ServerCpu() as other:
        subprocess.run([sys.executable, "-c", "sum(i * i for i in range(6_000_000))"], check=True)
    assert other.seconds > 0.2 and other.seconds > own.seconds + 0.1
