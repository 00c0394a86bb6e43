"""Serving benchmark: a registered generator behind ``mlflow models serve``, over HTTP on loopback.

``python -m pipelines.bench serve [--model URI|FOLDER] [--requests N] [--clients 1 8] [--port P]``

Starts ``mlflow models serve --env-manager local`` on 127.0.0.1 for the model (default
``models:/attnflow-pose@champion`` in the project's MLflow store), waits for ``/ping`` (bounded),
warms it up, then for each client count runs that many clients at once, each posting one realistic
pose-transfer request after another until ``--requests`` answers have come back: scikit-image's
``astronaut`` photo (512×512) as a base64 PNG with its OpenPose-18 keypoints, and the target pose of
the first test pair of the dataset's shards (fixed keypoints when there are none).  So each request
costs the server what a real one does: PNG decode, framing (crop and resize to the model's frame),
pose-map rendering, the generator, PNG encode.  Reports p50/p95 latency (client-side wall time, ms)
and requests/s per client count.  The server is stopped at the end, also on error or Ctrl-C.

Where the server's time goes is measured in this process on the same model and request, before
the server starts: ``mlflow.pyfunc.load_model`` gives the service the server runs; its whole
``predict`` is timed, and its steps (decode image and points, framing, pose maps, generator, PNG
encode) are timed one by one on the same inputs, through the same functions
(:mod:`pipelines.serving.contract`, :class:`pipelines.apps.pose_transfer.PoseTransfer`); the image
they produce is checked to equal the service's.  Nothing is added to the served code path.  The
rest of ``predict`` (the DataFrame, schema checks) is "other"; what HTTP adds on top (JSON of a
~0.5 MB body, the web framework) is p50 at one client minus the in-process median.

Figures are wall times: on a machine busy with other work they measure the queue for a core too;
the report records cores, torch threads and the load average.  Writes reports/bench-serve.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from datasets.files import atomic_write_bytes
from datasets.pose.keypoints import NUM_JOINTS
from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.config.params import ConfigError, load_config
from pipelines.serving.contract import (
    decode_image,
    decode_points,
    decode_size,
    encode_png,
    points_json,
)
from pipelines.serving.server import HOST, Server, free_port

log = logging.getLogger("bench.serve")

DEFAULT_MODEL = "models:/attnflow-pose@champion"
SERVICE_LOADER = "pipelines.serving.pyfunc"
MAX_CLIENTS = 64
MAX_REQUESTS = 10_000
STAGES = ("decode", "framing", "pose_maps", "generator", "encode")
STAGE_LABELS = {
    "decode": "decode image + points",
    "framing": "framing (crop, resize, map points)",
    "pose_maps": "pose maps (2 × render)",
    "generator": "generator (tensors, forward, image)",
    "encode": "PNG encode",
    "other": "other (DataFrame, schema)",
}

# Rough OpenPose-18 points of scikit-image's astronaut (512×512): head, shoulders, arms; wrists,
# hips and legs outside the photo are missing (-1).
ASTRONAUT_KEYPOINTS = [
    [250, 125],
    [245, 250],
    [160, 260],
    [120, 400],
    [-1, -1],
    [335, 255],
    [380, 390],
    [-1, -1],
    [-1, -1],
    [-1, -1],
    [-1, -1],
    [-1, -1],
    [-1, -1],
    [-1, -1],
    [235, 110],
    [270, 110],
    [215, 120],
    [290, 120],
]
# A standing person, full body, facing the camera, in a 256×176 frame: the target when no shards exist.
FALLBACK_TARGET = (
    [
        [88, 30],
        [88, 56],
        [66, 58],
        [58, 94],
        [54, 128],
        [110, 58],
        [118, 94],
        [122, 128],
        [74, 130],
        [72, 180],
        [70, 228],
        [102, 130],
        [104, 180],
        [106, 228],
        [94, 26],
        [82, 26],
        [100, 30],
        [76, 30],
    ],
    (256, 176),
)


# ---------------------------------------------------------------------------------------------
# Figures (pure).


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics
    (numpy's default); NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside [0, 100]")
    xs = sorted(float(v) for v in values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(latencies_s: Sequence[float], wall_s: float, errors: int = 0) -> dict[str, Any]:
    """Latency figures (ms) of the answered requests and their rate over the whole wall time."""
    ms = [v * 1e3 for v in latencies_s]
    return {
        "requests": len(ms),
        "errors": errors,
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "mean_ms": round(statistics.fmean(ms), 2) if ms else math.nan,
        "max_ms": round(max(ms), 2) if ms else math.nan,
        "requests_per_s": round(len(ms) / wall_s, 3) if wall_s > 0 else math.nan,
        "wall_s": round(wall_s, 3),
    }


def shares(stage_ms: dict[str, float], total_ms: float) -> dict[str, float]:
    """Each stage's share of ``total_ms`` plus ``other``, what the stages leave (never below 0)."""
    out = {k: v / total_ms for k, v in stage_ms.items()}
    out["other"] = max(total_ms - sum(stage_ms.values()), 0.0) / total_ms
    return {k: round(v, 4) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# The request.


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # RGB uint8 512×512


def shard_target(shards: Path | None) -> tuple[np.ndarray, tuple[int, int], str] | None:
    """The target keypoints of the first test pair in ``shards`` (in the shards' frame), the frame
    and where they came from; None when there are no test shards to read."""
    from datasets.shards.samples import parse_sample
    from datasets.shards.tar import iter_samples, load_manifest

    if shards is None or not shards.is_dir():
        return None
    try:
        manifest = load_manifest(shards)
        frame = (int(manifest["image_size"][0]), int(manifest["image_size"][1]))
        for tar in sorted(shards.glob("test-*.tar")):
            for key, files in iter_samples(tar.read_bytes()):
                sample = parse_sample(key, files)
                for _, b in sample.pairs:
                    kp = sample.views[b].keypoints
                    if kp.shape == (NUM_JOINTS, 2) and (kp >= 0).all(axis=1).any():
                        return kp.astype(np.float64), frame, f"{tar.name}:{key} {sample.views[b].name}"
    except (OSError, ValueError, KeyError) as exc:  # unreadable shards: the fixed pose instead
        log.warning("%s: no target pose from the test shards (%s); using fixed keypoints", shards, exc)
    return None


def build_request(
    image: np.ndarray,
    source_keypoints: Sequence[Sequence[float]] | np.ndarray,
    target_keypoints: Sequence[Sequence[float]] | np.ndarray,
    target_size: tuple[int, int],
) -> dict[str, str]:
    """One pose-transfer request row (pipelines.serving.contract's columns)."""
    return {
        "source_image": encode_png(image),
        "target_keypoints": points_json(np.asarray(target_keypoints)),
        "target_size": json.dumps([int(target_size[0]), int(target_size[1])]),
        "source_keypoints": points_json(np.asarray(source_keypoints)),
    }


def request_body(row: dict[str, str]) -> bytes:
    return json.dumps({"dataframe_records": [row]}).encode()


def default_shards(dataset: str, params: str) -> Path | None:
    """``datasets.<dataset>.shards`` of the params file, or None without one."""
    from pipelines.config.params import load_config

    if not Path(params).is_file():
        return None
    try:
        return Path(load_config(params).dataset(dataset).shards)
    except Exception as exc:  # noqa: BLE001 - any config problem: fall back to the fixed pose
        log.warning("%s: no shards for %s (%s)", params, dataset, exc)
        return None


# ---------------------------------------------------------------------------------------------
# In-process breakdown.


class NotTheService(RuntimeError):
    """The model's python_function flavour is not the column service (an older registration)."""


def load_service(model: str) -> Any:
    """``mlflow.pyfunc.load_model`` of ``model`` (the project's store for a URI); raises
    :class:`NotTheService` when its pyfunc flavour is not :mod:`pipelines.serving.pyfunc`."""
    import mlflow
    import mlflow.pyfunc

    from pipelines.tracking.journal import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    saved = list(sys.path)
    try:
        pyfunc = mlflow.pyfunc.load_model(model)
    finally:
        sys.path[:] = saved  # load_model prepends the model's code folder
    loader = pyfunc.metadata.flavors.get("python_function", {}).get("loader_module")
    if loader != SERVICE_LOADER:
        raise NotTheService(
            f"{model}: its python_function flavour is {loader}, not the column service "
            f"{SERVICE_LOADER} (registered by an older version: register it again)"
        )
    return pyfunc


def _median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3


def time_breakdown(
    pyfunc: Any, row: dict[str, str], repeats: int = 10, clock: Callable[[], float] = time.perf_counter
) -> dict[str, Any]:
    """Median ms of the service's whole ``predict`` on ``row`` and of its steps, alternated."""
    import pandas as pd

    from pipelines.apps.pose_transfer import PoseTransfer

    net = pyfunc.get_raw_model()
    app = PoseTransfer(net)
    frame = pd.DataFrame([row])
    served = pyfunc.predict(frame)["image"][0]  # warm-up (first-call allocations)
    totals: list[float] = []
    steps: dict[str, list[float]] = {k: [] for k in STAGES}
    same = True
    for _ in range(max(1, repeats)):
        t0 = clock()
        out = pyfunc.predict(frame)["image"][0]
        totals.append(clock() - t0)
        same &= out == served
        # The steps of GeneratorService.pose + predict, on the same inputs, one by one.
        t0 = clock()
        image = decode_image(row["source_image"], "source_image")
        target = decode_points(row["target_keypoints"], "target_keypoints", NUM_JOINTS)
        size = decode_size(row["target_size"])
        source = decode_points(row["source_keypoints"], "source_keypoints", NUM_JOINTS)
        t1 = clock()
        inputs = app.prepare(image, target, size, source_keypoints=source)
        t2 = clock()
        app._pose(inputs[1]), app._pose(inputs[2])  # what generate renders: timed apart, subtracted below
        t3 = clock()
        result = app.generate(*inputs)
        t4 = clock()
        png = encode_png(result)
        t5 = clock()
        same &= png == served
        steps["decode"].append(t1 - t0)
        steps["framing"].append(t2 - t1)
        steps["pose_maps"].append(t3 - t2)
        steps["generator"].append(max(t4 - t3 - (t3 - t2), 0.0))
        steps["encode"].append(t5 - t4)
    stage_ms = {k: round(_median_ms(v), 3) for k, v in steps.items()}
    total_ms = round(_median_ms(totals), 3)
    return {
        "repeats": len(totals),
        "predict_ms": total_ms,
        "stage_ms": stage_ms,
        "shares": shares(stage_ms, total_ms),
        "matches_service": bool(same),
        "model_size": list(app.size),
        "source_size": list(image.shape[:2]),
    }


def time_batching(
    pyfunc: Any,
    row: dict[str, str],
    batch: int,
    threads: int,
    repeats: int = 5,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Median ms of the generator pass on ``batch`` copies of ``row``'s job at once against
    ``batch`` passes of one, at ``threads`` torch threads (a Ray replica's): what batching saves."""
    import pandas as pd
    import torch

    service = pyfunc._model_impl  # the GeneratorService mlflow loaded
    jobs = service.parse(pd.DataFrame([row])) * batch
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        service.forward(jobs), service.forward(jobs[:1])  # warm-up
        pooled, single = [], []
        for _ in range(max(1, repeats)):
            t0 = clock()
            service.forward(jobs)
            t1 = clock()
            for job in jobs:
                service.forward([job])
            t2 = clock()
            pooled.append(t1 - t0)
            single.append(t2 - t1)
    finally:
        torch.set_num_threads(saved)
    one_pass, one_by_one = _median_ms(pooled), _median_ms(single)
    return {
        "batch": batch,
        "threads": threads,
        "batched_ms": round(one_pass, 2),
        "one_by_one_ms": round(one_by_one, 2),
        "speedup": round(one_by_one / one_pass, 3),
    }


# ---------------------------------------------------------------------------------------------
# The server and its clients.


class Client:
    """One keep-alive connection posting request bodies to /invocations."""

    def __init__(self, port: int, timeout_s: float) -> None:
        self.port, self.timeout_s = port, timeout_s
        self.conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> tuple[int, bytes]:
        for attempt in (0, 1):  # a dropped keep-alive connection: reconnect once
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout_s)
            try:
                self.conn.request(
                    "POST", "/invocations", body=body, headers={"Content-Type": "application/json"}
                )
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def answer_image(status: int, payload: bytes) -> str:
    """The base64 PNG of a 200 answer; raises with the server's message otherwise."""
    try:
        doc = json.loads(payload or b"{}")
    except ValueError:
        raise RuntimeError(f"HTTP {status}: not JSON: {payload[:200]!r}") from None
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {str(doc.get('message', doc))[:300]}")
    return doc["predictions"][0]["image"]


class ServerCpu:
    """CPU seconds the machine spends outside this process (the server, whichever processes it
    runs in: mlflow's worker, or Ray's proxy, replicas, controller and daemons) while clients run:
    all cores' busy time (/proc/stat via psutil) minus this process's own (the client threads)."""

    def __enter__(self) -> Self:
        import psutil

        self._me = psutil.Process()
        self._t0 = self._busy(psutil.cpu_times()) - self._own()
        return self

    @staticmethod
    def _busy(t: Any) -> float:
        return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))

    def _own(self) -> float:
        t = self._me.cpu_times()
        return float(t.user + t.system)

    def __exit__(self, *exc: object) -> None:
        import psutil

        self.seconds = self._busy(psutil.cpu_times()) - self._own() - self._t0


def cpu_figures(cpu_s: float, answered: int, wall_s: float, cores: int) -> dict[str, float]:
    """Server CPU per answered request, the cores it kept busy, and the requests/s the machine's
    cores could give at that cost if every core did nothing else (the ceiling of that layout)."""
    if answered <= 0 or wall_s <= 0 or cpu_s <= 0:
        return {}
    per = cpu_s / answered
    return {
        "server_cpu_ms_per_request": round(1e3 * per, 1),
        "server_cores_busy": round(cpu_s / wall_s, 2),
        "cpu_bound_requests_per_s": round(cores / per, 2),
    }


def run_clients(
    port: int, body: bytes, clients: int, requests: int, timeout_s: float
) -> tuple[list[float], float, int, str]:
    """``clients`` threads posting ``body`` until ``requests`` have been sent: latencies (s) of the
    200 answers, wall time, errors and the first error's message."""
    lock = threading.Lock()
    left = [requests]
    latencies: list[float] = []
    errors: list[str] = []

    def worker() -> None:
        client = Client(port, timeout_s)
        try:
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                t0 = time.perf_counter()
                try:
                    status, payload = client.post(body)
                    dt = time.perf_counter() - t0
                    answer_image(status, payload)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    client.close()
                    continue
                with lock:
                    latencies.append(dt)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, name=f"client-{i}", daemon=True) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        # Bounded: every request has its own timeout; a thread never runs more than all of them.
        t.join(timeout=timeout_s * (requests + 1))
    wall = time.perf_counter() - t0
    if any(t.is_alive() for t in threads):
        errors.append("a client thread did not finish in time")
    return latencies, wall, len(errors), (errors[0] if errors else "")


# ---------------------------------------------------------------------------------------------


def model_version(model: str) -> str | None:
    """The registry version a ``models:/NAME@ALIAS`` or ``models:/NAME/V`` URI names now."""
    m = re.fullmatch(r"models:/([^/@]+)(?:@(.+)|/(\d+))", model)
    if not m:
        return None
    if m.group(3):
        return m.group(3)
    try:
        from mlflow import MlflowClient

        from pipelines.tracking.journal import tracking_uri

        return str(MlflowClient(tracking_uri()).get_model_version_by_alias(m.group(1), m.group(2)).version)
    except Exception:  # noqa: BLE001 - informative only
        return None


def machine() -> dict[str, Any]:
    import mlflow
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "mlflow": mlflow.__version__,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "model": args.model,
        "model_version": model_version(args.model),
        "machine": machine(),
        "load_average_start": os.getloadavg(),
    }
    shards = Path(args.shards) if args.shards else default_shards(args.dataset, args.params)
    found = shard_target(shards)
    target, frame, origin = (
        found
        if found
        else (
            np.asarray(FALLBACK_TARGET[0], np.float64),
            FALLBACK_TARGET[1],
            "fixed keypoints (no test shards)",
        )
    )
    photo = astronaut()
    row = build_request(photo, ASTRONAUT_KEYPOINTS, target, frame)
    body = request_body(row)
    report["request"] = {
        "source_image": f"skimage.data.astronaut() {photo.shape[0]}x{photo.shape[1]} PNG",
        "source_png_bytes": len(row["source_image"]) * 3 // 4,
        "body_bytes": len(body),
        "target_pose": origin,
        "target_size": list(frame),
    }

    log.info("loading %s in-process for the breakdown ...", args.model)
    pyfunc = load_service(args.model)
    report["breakdown"] = time_breakdown(pyfunc, row, args.repeats)
    if not report["breakdown"]["matches_service"]:
        log.warning("the timed steps gave another image than the service: the breakdown may be off")
    expected = pyfunc.predict(pd.DataFrame([row]))["image"][0]
    cfg = load_config([args.params], args.overrides).serve
    report["batching"] = time_batching(pyfunc, row, cfg.max_batch_size, cfg.threads_per_replica)
    del pyfunc

    report["servers"], report["http"] = {}, []
    for engine in args.engine:
        port = args.port or free_port()
        with (
            tempfile.TemporaryDirectory(prefix="bench-serve-") as workdir,
            engine_server(engine, args, port, Path(workdir), cfg) as server,
        ):
            info = {
                "host": HOST,
                "port": port,
                "startup_s": round(server.startup_s, 1),
                **engine_settings(engine, args, cfg),
            }
            warm = Client(port, args.timeout)
            try:
                for _ in range(max(1, args.warmup)):
                    image = answer_image(*warm.post(body))
            finally:
                warm.close()
            info["same_image_as_in_process"] = image == expected
            report["servers"][engine] = info
            for n in args.clients:
                log.info("%s: %d client(s), %d requests ...", engine, n, args.requests)
                with ServerCpu() as cpu:
                    latencies, wall, errors, first = run_clients(port, body, n, args.requests, args.timeout)
                entry = {
                    "engine": engine,
                    "clients": n,
                    **summarize(latencies, wall, errors),
                    **cpu_figures(cpu.seconds, len(latencies), wall, len(os.sched_getaffinity(0))),
                }
                if first:
                    entry["first_error"] = first[:500]
                report["http"].append(entry)
    report["load_average_end"] = os.getloadavg()
    report["http_overhead_ms"] = {
        h["engine"]: round(h["p50_ms"] - report["breakdown"]["predict_ms"], 2)
        for h in report["http"]
        if h["clients"] == 1 and h["requests"]
    }
    report["ray_vs_mlflow"] = compare_engines(report["http"])
    return report


def engine_settings(engine: str, args: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    import torch

    if engine == "mlflow":
        return {
            "engine": "mlflow models serve",
            "workers": args.workers,
            "threads": args.threads or f"torch default ({torch.get_num_threads()} here)",
        }
    return {
        "engine": "Ray Serve",
        "replicas": cfg.initial_replicas,
        "threads_per_replica": cfg.threads_per_replica,
        "max_batch_size": cfg.max_batch_size,
        "batch_wait_timeout_s": cfg.batch_wait_timeout_s,
    }


def engine_server(engine: str, args: argparse.Namespace, port: int, workdir: Path, cfg: Any) -> Any:
    """The context manager serving ``args.model`` on ``port`` with ``engine``."""
    if engine == "mlflow":
        return Server(
            args.model,
            port,
            workdir,
            workers=args.workers,
            threads=args.threads,
            start_timeout_s=args.start_timeout,
            announce=True,
        )
    from pipelines.serving.ray_local import LocalRayServe

    return LocalRayServe(args.model, port, cfg, start_timeout_s=args.start_timeout, announce=True)


def compare_engines(http: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Ray against mlflow at each client count both ran: requests/s ratio and p95 ratio."""
    by = {(h["engine"], h["clients"]): h for h in http if h["requests"]}
    out = {}
    for (engine, clients), ray in by.items():
        base = by.get(("mlflow", clients))
        if engine != "ray" or base is None:
            continue
        out[str(clients)] = {
            "requests_per_s_ratio": round(ray["requests_per_s"] / base["requests_per_s"], 3),
            "p95_ratio": round(ray["p95_ms"] / base["p95_ms"], 3),
        }
    return out or None


def format_table(r: dict[str, Any]) -> str:
    m, b = r["machine"], r["breakdown"]
    version = f" (v{r['model_version']})" if r.get("model_version") else ""
    load = ", ".join(f"{x:.2f}" for x in (r["load_average_start"][0], r["load_average_end"][0]))
    lines = [
        (
            f"model {r['model']}{version}, {b['model_size'][0]}x{b['model_size'][1]}; request: "
            f"{r['request']['source_image']} ({r['request']['body_bytes'] / 1024:.0f} KB body), target pose "
            f"from {r['request']['target_pose']}"
        ),
        (
            f"machine: {m['cores_usable']} of {m['cores']} cores, torch {m['torch']}, mlflow {m['mlflow']}; "
            f"load average (1 min) at start, end: {load}"
        ),
    ]
    for engine, info in r["servers"].items():
        if engine == "mlflow":
            how = f"{info['workers']} worker(s), torch threads {info['threads']}"
        else:
            how = (
                f"{info['replicas']} replica(s) x {info['threads_per_replica']} torch thread(s), batches of up "
                f"to {info['max_batch_size']} requests (wait {1e3 * info['batch_wait_timeout_s']:.0f} ms)"
            )
        lines.append(f"{engine}: {info['engine']}, {how}; started in {info['startup_s']:.0f} s")
    lines += [
        "",
        (
            "| engine | clients | requests | errors | p50 ms | p95 ms | requests/s "
            "| server CPU ms/request | cores busy | CPU-bound requests/s |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for h in r["http"]:
        cpu = (
            f"{h['server_cpu_ms_per_request']:.0f} | {h['server_cores_busy']:.2f} | "
            f"{h['cpu_bound_requests_per_s']:.1f}"
            if "server_cpu_ms_per_request" in h
            else "n/a | n/a | n/a"
        )
        lines.append(
            f"| {h['engine']} | {h['clients']} | {h['requests']} | {h['errors']} | {h['p50_ms']:.0f} | "
            f"{h['p95_ms']:.0f} | {h['requests_per_s']:.2f} | {cpu} |"
        )
    for clients, c in (r.get("ray_vs_mlflow") or {}).items():
        lines.append(
            f"\nray / mlflow at {clients} client(s): {c['requests_per_s_ratio']:.2f}x the requests/s, "
            f"p95 {c['p95_ratio']:.2f}x"
        )
    lines += [
        "",
        f"in-process predict (same model and request, median of {b['repeats']}): {b['predict_ms']:.0f} ms"
        + ("" if b["matches_service"] else " (WARNING: the timed steps gave another image)"),
        "",
        "| stage | ms | share |",
        "|---|---:|---:|",
    ]
    for k in (*STAGES, "other"):
        ms = b["stage_ms"].get(k, b["shares"][k] * b["predict_ms"])
        lines.append(f"| {STAGE_LABELS[k]} | {ms:.1f} | {100 * b['shares'][k]:.1f}% |")
    if r.get("batching"):
        bt = r["batching"]
        lines.append(
            f"\ngenerator pass at {bt['threads']} thread(s): {bt['batch']} requests at once "
            f"{bt['batched_ms']:.0f} ms, one by one {bt['one_by_one_ms']:.0f} ms ({bt['speedup']:.2f}x)"
        )
    for engine, ms in (r.get("http_overhead_ms") or {}).items():
        lines.append(
            f"{engine}: HTTP, JSON and routing on top (p50 at 1 client - in-process median): {ms:.0f} ms"
        )
    for h in r["http"]:
        if h.get("first_error"):
            lines.append(f"{h['engine']}, {h['clients']} client(s), first error: {h['first_error'][:200]}")
    return "\n".join(lines)


def _bounded(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} outside [{lo}, {hi}]")
        return value

    return parse


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.bench serve", description=__doc__.split("\n")[0])
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"registered/logged model URI or a local model folder (default: {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--requests",
        type=_bounded(1, MAX_REQUESTS),
        default=40,
        help="requests per client setting, shared by its clients (default: 40)",
    )
    p.add_argument(
        "--clients",
        type=_bounded(1, MAX_CLIENTS),
        nargs="+",
        default=[1, 8],
        help="concurrent clients, one run per value (default: 1 8)",
    )
    p.add_argument(
        "--engine",
        nargs="+",
        choices=("mlflow", "ray"),
        default=["mlflow", "ray"],
        help="servers to measure, one after the other in this run (default: mlflow ray): mlflow "
        "models serve, or the Ray Serve application with params.yaml serve.*",
    )
    p.add_argument("--port", type=_bounded(1, 65535), help="server port on 127.0.0.1 (default: a free one)")
    p.add_argument("--workers", type=_bounded(1, 16), default=1, help="server (uvicorn) workers (default: 1)")
    p.add_argument(
        "--threads",
        type=_bounded(1, 256),
        help="torch threads in-process and OMP_NUM_THREADS of the server (default: torch's default)",
    )
    p.add_argument("--warmup", type=_bounded(1, 100), default=3, help="requests before timing (default: 3)")
    p.add_argument(
        "--repeats",
        type=_bounded(1, 1000),
        default=10,
        help="in-process repeats of the breakdown (default: 10)",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default: 120)")
    p.add_argument(
        "--start-timeout", type=float, default=300.0, help="seconds to wait for /ping (default: 300)"
    )
    p.add_argument("--dataset", default="synthetic_fashion", help="whose test shards give the target pose")
    p.add_argument("--shards", help="shards folder (default: datasets.DATASET.shards of --params)")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="serve.KEY=VALUE",
        help="a serve.* setting for the Ray engine, as the commands' --set (repeatable)",
    )
    p.add_argument("--out", default="reports/bench-serve.json")
    add_log_level_arg(p)
    args = p.parse_args(argv)
    setup_logging(args.log_level, "bench serve")
    if not (0 < args.timeout <= 3600 and 0 < args.start_timeout <= 3600):
        p.error("--timeout and --start-timeout must lie in (0, 3600] seconds")
    try:
        load_config([args.params], args.overrides)  # a bad --set fails before any server starts
    except ConfigError as exc:
        p.error(f"config: {exc}")
    try:
        report = run(args)
    except NotTheService as exc:
        log.error("%s", exc)
        return 2
    except (RuntimeError, OSError, http.client.HTTPException) as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return 1
    out = Path(args.out)
    atomic_write_bytes(out, (json.dumps(report, indent=2) + "\n").encode())
    print(format_table(report))
    print(f"\nwrote {out}")
    return 1 if any(h["errors"] or not h["requests"] for h in report["http"]) else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
