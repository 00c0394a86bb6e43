"""The Ray Serve application: the mlflow serve HTTP contract, batching across requests, one bad
request failing alone, and following the registry alias.

The deployment class is driven in-process here (its ``__call__`` on ASGI requests, its batching on
this event loop): everything but Ray's proxy and replica actors.  The same class behind a real Ray
Serve, over HTTP and under faults, is tests/test_faults_serve.py (make test-faults).
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from datasets.pose.keypoints import NUM_JOINTS
from pipelines.config.stages import ServeConfig
from pipelines.serving import flavor
from pipelines.serving.ray_app import VERSION_HEADER, Follower, GeneratorServer, ModelRef, ServeError
from tests.test_serving_pyfunc import POSE_SIZE, decode_png, pose_request, tiny_generator


class Registry:
    """A throwaway MLflow store with a registered model whose versions the tests add."""

    def __init__(self, root: Path, name: str = "t-pose") -> None:
        import mlflow

        self.uri = f"sqlite:///{root / 'mlruns.db'}"
        self.name = name
        mlflow.set_tracking_uri(self.uri)
        self.experiment = mlflow.create_experiment("serve-tests", artifact_location=(root / "artifacts").as_uri())

    @property
    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(self.uri)

    def add(self, seed: int, champion: bool = True) -> str:
        import mlflow

        with mlflow.start_run(experiment_id=self.experiment):
            info = flavor.log_model(tiny_generator(NUM_JOINTS, POSE_SIZE, seed=seed), "pose", "model")
        version = str(mlflow.register_model(info.model_uri, self.name).version)
        if champion:
            self.promote(version)
        return version

    def add_broken(self) -> str:
        """A version whose weights are gone from the artifact store: it cannot load."""
        import mlflow

        version = self.add(seed=99, champion=False)
        source = self.client.get_model_version(self.name, version).source  # models:/m-<id>
        folder = Path(mlflow.get_logged_model(source.split("/")[-1]).artifact_location.removeprefix("file://"))
        weights = list(folder.rglob("*.pth"))
        assert weights, f"no weights under {folder}"
        for path in weights:
            path.unlink()
        return version

    def promote(self, version: str) -> None:
        self.client.set_registered_model_alias(self.name, "champion", version)


@pytest.fixture(autouse=True)
def replica_context(monkeypatch):
    """``@serve.batch`` reads the replica's max_ongoing_requests when its queue starts: the one
    thing a replica has that this process lacks."""
    from types import SimpleNamespace

    from ray import serve

    fake = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=16))
    monkeypatch.setattr(serve, "get_replica_context", lambda: fake)


@pytest.fixture
def registry(tmp_path, monkeypatch, keep_sys_path) -> Registry:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    return Registry(tmp_path)


@pytest.fixture
def keep_sys_path():
    import sys

    saved = list(sys.path)
    yield
    sys.path[:] = saved


def settings(**changes: Any) -> dict:
    from dataclasses import asdict

    return asdict(ServeConfig(**{"alias_poll_s": 3600.0, "batch_wait_timeout_s": 0.2, **changes}))


def asgi_request(path: str, body: dict | bytes | None = None, method: str = "POST",
                 content_type: str = "application/json") -> Any:
    from starlette.requests import Request

    raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    scope = {"type": "http", "method": method, "path": path, "headers": [(b"content-type", content_type.encode())],
             "query_string": b"", "server": ("127.0.0.1", 80), "scheme": "http", "root_path": ""}
    return Request(scope, receive)


# One loop for every test, as a replica has: ``@serve.batch`` keeps one queue per decorated method
# in a process, living on the loop that first used it.
LOOP = asyncio.new_event_loop()


def call(server: GeneratorServer, *requests: Any) -> list[tuple[int, dict | str, str]]:
    """The requests answered concurrently on the replica-like loop."""
    async def all_of() -> list:
        return await asyncio.gather(*(asyncio.wait_for(server(r), 120) for r in requests))

    answers = LOOP.run_until_complete(all_of())
    out = []
    for a in answers:
        text = a.body.decode()
        try:
            payload: dict | str = json.loads(text)
        except json.JSONDecodeError:
            payload = text
        out.append((a.status_code, payload, a.headers.get(VERSION_HEADER)))
    return out


def record_batches(server: GeneratorServer) -> list[int]:
    """Rows per generator pass of the version being served, from now on."""
    sizes: list[int] = []
    service = server.follower.current.service
    forward = service.forward

    def counting(jobs):
        sizes.append(len(jobs))
        return forward(jobs)

    service.forward = counting
    return sizes


def test_it_answers_the_mlflow_serve_contract_naming_the_version(registry):
    v1 = registry.add(seed=1)
    server = GeneratorServer(f"models:/{registry.name}@champion", settings(), registry.uri)
    row = pose_request()
    split = pd.DataFrame([row]).to_dict(orient="split")
    split.pop("index")
    (ping, _, ping_version), (records, answer, version), (by_split, split_answer, _) = call(
        server, asgi_request("/ping", method="GET"), asgi_request("/invocations", {"dataframe_records": [row]}),
        asgi_request("/invocations", {"dataframe_split": split}))
    assert ping == 200 and ping_version == version == f"{registry.name}/{v1}"
    assert records == by_split == 200, (answer, split_answer)
    image = answer["predictions"][0]["image"]
    assert decode_png(image).shape == (*POSE_SIZE, 3)
    assert split_answer["predictions"][0]["image"] == image
    # The same pyfunc mlflow serve loads gives the same picture.
    import mlflow.pyfunc

    expected = mlflow.pyfunc.load_model(f"models:/{registry.name}/{v1}").predict(pd.DataFrame([row]))["image"][0]
    assert image == expected
    status, error, _ = call(server, asgi_request("/invocations", {"dataframe_records": [dict(row, target_size="[0, 5]")]}))[0]
    assert status == 400 and error["error_code"] == "INVALID_PARAMETER_VALUE" and "target_size" in error["message"]
    assert call(server, asgi_request("/nowhere", method="GET"))[0][0] == 404
    assert call(server, asgi_request("/invocations", b"{}", content_type="text/html"))[0][0] == 415


def test_concurrent_requests_share_a_pass_and_a_broken_one_fails_alone(registry):
    registry.add(seed=1)
    server = GeneratorServer(f"models:/{registry.name}@champion", settings(max_batch_size=8), registry.uri)
    sizes = record_batches(server)
    good = [pose_request() for _ in range(3)]
    alone = call(server, asgi_request("/invocations", {"dataframe_records": [good[0]]}))[0]
    sizes.clear()
    broken = dict(pose_request(), source_image="bm90IGFuIGltYWdl")  # base64 of "not an image"
    answers = call(server, *(asgi_request("/invocations", {"dataframe_records": [r]}) for r in (*good[:2], broken, good[2])))
    statuses = [a[0] for a in answers]
    assert statuses == [200, 200, 400, 200], answers
    assert "source_image" in answers[2][1]["message"]
    assert sizes == [3], sizes  # the three good requests in one generator pass, the broken one never in it
    for status, payload, _ in (answers[0], answers[1], answers[3]):
        # Batched or alone, a request gets the same picture (instance norm: rows do not mix).
        got, want = decode_png(payload["predictions"][0]["image"]), decode_png(alone[1]["predictions"][0]["image"])
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_it_follows_the_alias_and_keeps_serving_when_a_version_fails_to_load(registry):
    v1 = registry.add(seed=1)
    server = GeneratorServer(f"models:/{registry.name}@champion", settings(), registry.uri)
    follower = server.follower
    row = {"dataframe_records": [pose_request()]}
    before = call(server, asgi_request("/invocations", row))[0]
    assert follower.poll() == "unchanged"

    v2 = registry.add(seed=2)
    assert follower.poll() == "moved"
    after = call(server, asgi_request("/invocations", row))[0]
    assert (before[2], after[2]) == (f"{registry.name}/{v1}", f"{registry.name}/{v2}")
    assert before[1]["predictions"][0]["image"] != after[1]["predictions"][0]["image"]  # other weights

    v3 = registry.add_broken()
    registry.promote(v3)
    assert follower.poll() == "load failed"
    assert v3 in follower.failed
    assert follower.poll() == "unchanged"  # not retried every poll
    still = call(server, asgi_request("/invocations", row))[0]
    assert still[0] == 200 and still[2] == f"{registry.name}/{v2}"


def test_bad_model_references_are_refused_before_any_replica_starts(tmp_path):
    with pytest.raises(ServeError, match="models:/NAME@ALIAS"):
        ModelRef.parse("models:/a/b/c")
    with pytest.raises(ServeError, match="no MLmodel"):
        ModelRef.parse(str(tmp_path))
    ref = ModelRef.parse("models:/attnflow-pose@champion")
    assert (ref.name, ref.alias, ref.follows_alias) == ("attnflow-pose", "champion", True)
    assert not ModelRef.parse("models:/attnflow-pose/3").follows_alias


def test_a_registry_outage_keeps_the_current_version(registry, monkeypatch):
    registry.add(seed=1)
    follower = Follower(ModelRef.parse(f"models:/{registry.name}@champion"))
    import pipelines.serving.ray_app as app

    def down(ref):
        raise ConnectionError("registry down")

    monkeypatch.setattr(app, "alias_version", down)
    assert follower.poll() == "registry unreachable"
    assert follower.current.version == "1"


def test_the_rayservice_builds_both_applications_on_the_project_image():
    import re

    import yaml

    from pipelines.serving import ray_app

    root = Path(__file__).resolve().parents[1]
    doc = yaml.safe_load((root / "infra/rayservice.yaml").read_text())
    assert doc["kind"] == "RayService"
    serve_config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    apps = serve_config["applications"]
    assert sorted(a["args"]["model"] for a in apps) == ["models:/attnflow-portrait@champion",
                                                         "models:/attnflow-pose@champion"]
    assert len({a["route_prefix"] for a in apps}) == len(apps)
    for app in apps:
        module, _, attr = app["import_path"].partition(":")
        assert (module, attr) == ("pipelines.serving.ray_app", "build")
        built = ray_app.build(app["args"])  # params and overrides resolve; the model URI parses
        assert type(built).__name__ == "Application"
    makefile = (root / "Makefile").read_text()
    image = re.search(r"^IMAGE \?= (\S+)", makefile, flags=re.M).group(1)
    tag = re.search(r"^IMAGE_TAG \?= (\S+)", makefile, flags=re.M).group(1)
    cluster = doc["spec"]["rayClusterConfig"]
    containers = [c for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]] for c in g["template"]["spec"]["containers"]]
    assert {c["image"] for c in containers} == {f"{image}:{tag}-cpu"}
