"""The registered champions on Ray Serve: the pyfunc service, batched across requests, replicated,
following the registry alias.

Each replica loads ``models:/<name>@<alias>`` with ``mlflow.pyfunc.load_model`` (the same
:class:`pipelines.serving.pyfunc.GeneratorService` ``mlflow models serve`` runs) and answers HTTP
through MLflow's own scoring function (:func:`mlflow.pyfunc.scoring_server.invocations`): the same
``POST /invocations`` payloads (``dataframe_records``, ``dataframe_split``, …), schema checks, 400s
naming the field and JSON answers as ``mlflow models serve``, plus ``GET /ping``.  Only the
generator pass differs: the service's ``runner`` hands each request's parsed rows to a
``@serve.batch`` method, which runs the rows of concurrent requests in one forward pass.  A row the
service cannot parse fails its own request with 400 before it reaches a batch, so one broken image
never costs the other requests of its batch their answer.

Every answer carries ``X-Model-Version: <name>/<version>``.  A thread per replica asks the registry
every ``serve.alias_poll_s`` where the alias points; a new version is loaded beside the old one and
swapped in once loaded (requests in flight finish on the version they started with), and a version
that fails to load is logged and skipped while the previous one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ray import serve

from datasets import storage
from pipelines.config.stages import ServeConfig

log = logging.getLogger("attnflow.serve")

VERSION_HEADER = "X-Model-Version"
DEFAULT_APP = "attnflow"


class ServeError(RuntimeError):
    """The application cannot start: the message says what to change."""


@dataclass(frozen=True)
class ModelRef:
    """What a replica serves: ``models:/NAME@ALIAS`` (followed), ``models:/NAME/VERSION`` or a
    model folder (both fixed)."""

    uri: str
    name: str | None = None
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, uri: str) -> ModelRef:
        m = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", uri)
        if m:
            return cls(uri, m.group(1), m.group(2), m.group(3))
        if uri.startswith("models:"):
            raise ServeError(f"model {uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
        if not storage.is_url(uri) and not (storage.local_path(uri) / "MLmodel").is_file():
            raise ServeError(f"model {uri!r}: not a registry URI and no MLmodel file in that folder")
        return cls(uri)

    @property
    def follows_alias(self) -> bool:
        return self.alias is not None

    def version_uri(self, version: str) -> str:
        return f"models:/{self.name}/{version}" if self.name else self.uri


@dataclass(frozen=True)
class Loaded:
    """One loaded model version: the pyfunc MLflow scores with and the service inside it."""

    label: str  # NAME/VERSION (or the folder) for the answer's header
    version: str
    pyfunc: Any
    service: Any  # GeneratorService

    @property
    def schema(self) -> Any:
        return self.pyfunc.metadata.get_input_schema()


def load_version(ref: ModelRef, version: str | None) -> Loaded:
    """``mlflow.pyfunc.load_model`` of one version; refuses a model that is not the column service."""
    import mlflow.pyfunc

    from pipelines.serving.pyfunc import GeneratorService

    uri = ref.version_uri(version) if version else ref.uri
    pyfunc = mlflow.pyfunc.load_model(uri)
    service = getattr(pyfunc, "_model_impl", None)  # what the flavour's loader returned
    if not isinstance(service, GeneratorService):
        raise ServeError(
            f"{uri}: its python_function flavour is not pipelines.serving.pyfunc "
            f"(got {type(service).__name__}): register it again with this project"
        )
    label = f"{ref.name}/{version}" if ref.name else ref.uri
    return Loaded(label, version or "local", pyfunc, service)


def alias_version(ref: ModelRef) -> str:
    """The version ``ref``'s alias points at now (its fixed version for a fixed reference)."""
    if not ref.follows_alias:
        return ref.version or "local"
    from mlflow import MlflowClient

    assert ref.name is not None and ref.alias is not None  # models:/NAME@ALIAS
    return str(MlflowClient().get_model_version_by_alias(ref.name, ref.alias).version)


class Follower:
    """Holds the version being served and moves it when the alias does (no Ray in here: the
    deployment drives it from a thread, the tests call :meth:`poll` directly)."""

    def __init__(self, ref: ModelRef, prepare: Any = None) -> None:
        self.ref = ref
        self.prepare = prepare or (lambda loaded: loaded)  # e.g. install the batching runner
        version = alias_version(ref) if ref.name else None
        self.current: Loaded = self.prepare(load_version(ref, version))
        self.failed: dict[str, str] = {}  # version -> why it did not load (not retried)

    def poll(self) -> str:
        """Ask the registry once; load and swap in a new version.  Returns what happened."""
        if not self.ref.follows_alias:
            return "fixed"
        try:
            version = alias_version(self.ref)
        except Exception as exc:  # noqa: BLE001 - a registry hiccup must not stop serving
            log.warning(
                "%s: cannot read the alias (%s); still serving %s", self.ref.uri, exc, self.current.label
            )
            return "registry unreachable"
        if version == self.current.version or version in self.failed:
            return "unchanged"
        try:
            loaded = self.prepare(load_version(self.ref, version))
        except Exception as exc:  # noqa: BLE001 - any load failure leaves the old version serving
            self.failed[version] = f"{type(exc).__name__}: {exc}"
            log.error(
                "%s now points at version %s, which failed to load (%s); still serving %s",
                self.ref.uri,
                version,
                self.failed[version][:300],
                self.current.label,
            )
            return "load failed"
        previous, self.current = self.current, loaded
        log.info("%s moved: now serving %s (was %s)", self.ref.uri, loaded.label, previous.label)
        return "moved"


def json_response(status: int, body: str | bytes, media_type: str, label: str) -> Any:
    from starlette.responses import Response

    return Response(content=body, status_code=status, media_type=media_type, headers={VERSION_HEADER: label})


class GeneratorServer:
    """The Ray Serve deployment class (see the module docstring)."""

    def __init__(self, model: str, settings: dict[str, Any], tracking_uri: str | None = None) -> None:
        import mlflow
        import torch

        self.cfg = ServeConfig(**settings)
        torch.set_num_threads(self.cfg.threads_per_replica)
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        self.loop: asyncio.AbstractEventLoop | None = None
        # Requests parse and encode in these threads (as mlflow serve's to_thread does); the
        # generator passes run one at a time in their own thread, off the event loop.
        self.pool = ThreadPoolExecutor(self.cfg.max_ongoing_requests, thread_name_prefix="request")
        self.forward_pool = ThreadPoolExecutor(1, thread_name_prefix="forward")
        # serve.batch's wrapper has these setters; Ray's overloads of the decorator leave them out.
        self._batched.set_max_batch_size(self.cfg.max_batch_size)  # type: ignore[attr-defined]
        self._batched.set_batch_wait_timeout_s(self.cfg.batch_wait_timeout_s)  # type: ignore[attr-defined]
        self.follower = Follower(ModelRef.parse(model), self._install_runner)
        self._stop = threading.Event()
        threading.Thread(target=self._follow, name="alias-follower", daemon=True).start()

    def _install_runner(self, loaded: Loaded) -> Loaded:
        service = loaded.service

        def runner(jobs: list) -> list:
            if self.loop is None:  # before the first HTTP request (never, in practice)
                return service.forward(jobs)
            return asyncio.run_coroutine_threadsafe(self._batched((service, jobs)), self.loop).result()

        service.runner = runner
        return loaded

    def _follow(self) -> None:
        while not self._stop.wait(self.cfg.alias_poll_s):
            self.follower.poll()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)  # set from serve.* in __init__
    async def _batched(self, items: list[tuple[Any, list]]) -> list[list]:
        """One forward pass per service version
        over the rows of every request in the batch, the outputs handed back per request."""
        loop = asyncio.get_running_loop()
        outputs: list[list | None] = [None] * len(items)
        by_service: dict[int, list[int]] = {}
        for i, (service, _) in enumerate(items):
            by_service.setdefault(id(service), []).append(i)
        for members in by_service.values():
            service = items[members[0]][0]
            jobs = [job for i in members for job in items[i][1]]
            results = await loop.run_in_executor(self.forward_pool, service.forward, jobs)
            start = 0
            for i in members:
                n = len(items[i][1])
                outputs[i], start = results[start : start + n], start + n
        return outputs  # type: ignore[return-value]

    def _invoke(self, loaded: Loaded, body: bytes, content_type: str) -> tuple[int, str, str]:
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc import scoring_server

        try:
            result = scoring_server.invocations(body, content_type, loaded.pyfunc, loaded.schema)
            return result.status, result.response, result.mimetype
        except MlflowException as exc:  # answered as mlflow serve's handler answers it, less the trace
            trace = exc.json_kwargs.pop("stack_trace", None)
            if trace:
                log.error("%s: request failed inside the model:\n%s", loaded.label, trace)
            return exc.get_http_status_code(), exc.serialize_as_json(), "application/json"

    async def __call__(self, request: Any) -> Any:
        self.loop = asyncio.get_running_loop()  # the replica's loop, where the batch queue lives
        loaded = self.follower.current  # the version this request is answered by, start to end
        # Under a route prefix (a RayService serving both tasks: /pose, /portrait) the paths are
        # the prefix's own: /pose/invocations is this application's /invocations.
        path, root = request.url.path, request.scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        path, method = path.rstrip("/") or "/", request.method
        if path in ("/ping", "/health") and method == "GET":
            return json_response(200, "\n", "application/json", loaded.label)
        if path == "/version" and method == "GET":
            import mlflow

            return json_response(200, mlflow.__version__, "application/json", loaded.label)
        if path != "/invocations" or method != "POST":
            return json_response(
                404,
                '{"error_code": "NOT_FOUND", "message": "POST /invocations or GET /ping"}',
                "application/json",
                loaded.label,
            )
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        status, text, media_type = await asyncio.get_running_loop().run_in_executor(
            self.pool, self._invoke, loaded, body, content_type
        )
        return json_response(status, text, media_type, loaded.label)

    def check_health(self) -> None:
        if self.follower.current is None:
            raise RuntimeError("no model loaded")


def deployment(cfg: ServeConfig, name: str = "GeneratorServer", runtime_env: dict | None = None) -> Any:
    """The Ray Serve deployment of :class:`GeneratorServer` under ``cfg``'s replicas and batching."""
    options: dict[str, Any] = {"num_cpus": cfg.num_cpus_per_replica}
    if runtime_env:
        options["runtime_env"] = runtime_env
    return serve.deployment(
        GeneratorServer,
        name=name,
        max_ongoing_requests=cfg.max_ongoing_requests,
        ray_actor_options=options,
        autoscaling_config={
            "min_replicas": cfg.min_replicas,
            "initial_replicas": cfg.initial_replicas,
            "max_replicas": cfg.max_replicas,
            "target_ongoing_requests": cfg.target_ongoing_requests,
        },
    )


def application(
    model: str, cfg: ServeConfig, tracking_uri: str | None = None, runtime_env: dict | None = None
) -> Any:
    """The bound application: ``serve.run(application(...))``.  ``runtime_env``: the replicas'
    (a local head: the repository on PYTHONPATH; an image has the code installed)."""
    from dataclasses import asdict

    ModelRef.parse(model)  # a bad URI fails here, in the caller, not in every replica
    return deployment(cfg, runtime_env=runtime_env).bind(model, asdict(cfg), tracking_uri)


def build(args: dict[str, Any]) -> Any:
    """Application builder for ``serve run pipelines.serving.ray_app:build model=… params=…`` and
    a RayService's ``serveConfigV2`` (``import_path`` + ``args``): ``model`` (default
    ``models:/attnflow-pose@champion``), ``params`` (comma-separated params files, default
    params.yaml), ``set`` (a list of ``serve.KEY=VALUE``, as ``--set``), ``tracking_uri`` (default:
    MLFLOW_TRACKING_URI or the project's store)."""
    from pipelines.config.params import load_config
    from pipelines.tracking.journal import project_root
    from pipelines.tracking.journal import tracking_uri as project_store

    # Relative to the repository (the image's code), not to whichever folder Ray runs the builder in.
    params = [str(project_root() / p) for p in str(args.get("params", "params.yaml")).split(",") if p]
    overrides = args.get("set") or []
    cfg = load_config(params, [overrides] if isinstance(overrides, str) else list(overrides)).serve
    return application(
        args.get("model", "models:/attnflow-pose@champion"), cfg, args.get("tracking_uri") or project_store()
    )
