"""The Ray Serve application under faults, on a real Ray (faults suite: make test-faults).

- a replica killed under load: every request is answered (served, or refused with a status a
  client retries), nothing hangs, and the application serves again afterwards;
- the alias moved under load: no request fails, and the answers move from one version to the next;
- a new champion that cannot load: the previous version keeps serving.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipelines.config.stages import ServeConfig
from pipelines.serving.ray_app import VERSION_HEADER
from pipelines.serving.ray_local import LocalRayServe
from pipelines.serving.server import free_port
from tests.test_serving_pyfunc import pose_request
from tests.test_serving_ray import Registry

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]

REQUEST_TIMEOUT_S = 60


def post(base: str, body: bytes) -> tuple[int, str]:
    req = urllib.request.Request(f"{base}/invocations", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
            json.loads(resp.read())["predictions"][0]["image"]
            return resp.status, resp.headers.get(VERSION_HEADER, "")
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get(VERSION_HEADER, "") or ""
    except (OSError, TimeoutError) as err:
        return -1, type(err).__name__


class Load:
    """``clients`` threads posting one request after another until stopped: (status, version) each."""

    def __init__(self, base: str, body: bytes, clients: int = 4) -> None:
        self.base, self.body = base, body
        self.answers: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        while not self._stop.is_set():
            status, version = post(self.base, self.body)
            self.answers.append((time.monotonic(), status, version))

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=REQUEST_TIMEOUT_S + 10)
        assert not any(t.is_alive() for t in self._threads), "a client hung"


@pytest.fixture
def registry(tmp_path, monkeypatch) -> Registry:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    return Registry(tmp_path)


def serve(registry: Registry, **changes) -> LocalRayServe:
    cfg = ServeConfig(**{"min_replicas": 2, "initial_replicas": 2, "max_replicas": 2, "alias_poll_s": 1.0, **changes})
    return LocalRayServe(f"models:/{registry.name}@champion", free_port(), cfg, num_cpus=2)


def body() -> bytes:
    return json.dumps({"dataframe_records": [pose_request()]}).encode()


def test_a_replica_killed_under_load_costs_no_hang_and_serving_resumes(registry):
    import ray

    registry.add(seed=1)
    with serve(registry) as app, Load(app.base, body()) as load:
        time.sleep(3)
        victims = app.replicas()
        assert len(victims) == 2
        ray.kill(victims[0], no_restart=False)
        killed_at = time.monotonic()
        time.sleep(8)
    statuses = [s for _, s, _ in load.answers]
    assert statuses, "no request was answered"
    # Every request got an answer: 200, or a 5xx the client may retry; none hung (Load checks).
    assert set(statuses) <= {200, 500, 502, 503, 504}, sorted(set(statuses))
    after = [s for t, s, _ in load.answers if t > killed_at + 5]
    assert after and all(s == 200 for s in after), after


def test_the_alias_moved_under_load_fails_no_request(registry):
    v1 = registry.add(seed=1)
    with serve(registry) as app, Load(app.base, body()) as load:
        time.sleep(3)
        v2 = registry.add(seed=2)  # promoted: @champion moves under load
        moved_at = time.monotonic()
        deadline = moved_at + 60
        while time.monotonic() < deadline:
            if sum(1 for t, s, v in load.answers if t > moved_at and v.endswith(f"/{v2}")) >= 4:
                break
            time.sleep(0.5)
    statuses = {s for _, s, _ in load.answers}
    assert statuses == {200}, statuses
    versions = [v for _, _, v in load.answers]
    assert versions[0] == f"{registry.name}/{v1}" and versions[-1] == f"{registry.name}/{v2}", versions


def test_a_champion_that_cannot_load_leaves_the_previous_version_serving(registry):
    v1 = registry.add(seed=1)
    with serve(registry) as app:
        assert post(app.base, body()) == (200, f"{registry.name}/{v1}")
        broken = registry.add_broken()
        registry.promote(broken)
        time.sleep(6)  # several polls of every replica
        answers = [post(app.base, body()) for _ in range(6)]
    assert answers == [(200, f"{registry.name}/{v1}")] * 6, answers
