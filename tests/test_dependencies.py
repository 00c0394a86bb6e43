"""One source of dependencies: pyproject.toml declares them, requirements/*.lock pin every
package of each environment (transitive ones included) with hashes, and every other place that
installs or names packages (the Makefile, the images, the Ray runtime envs and launch manifests,
the registered models' requirements) installs a lock or is checked against one here."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from pipelines.jobs import manifests

ROOT = Path(__file__).resolve().parents[1]
REQ = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# lock -> the pyproject extras it holds on top of the core dependencies
LOCKS = {
    "dev.lock": ("pipeline", "dev"),
    "pose.lock": ("pipeline", "dev", "pose"),
    "worker-cpu.lock": (),
    "worker-cuda.lock": (),
}
CPU_LOCKS = ("dev.lock", "pose.lock", "worker-cpu.lock")
ENV = {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def read_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) of a `uv pip compile --generate-hashes` file."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            current = canonicalize_name(m.group(1))
            entries[current] = (m.group(2), [])
        elif m := re.match(r"^\s+--hash=sha256:([0-9a-f]{64})", line):
            entries[current][1].append(m.group(1))
        elif line.strip() and not line.lstrip().startswith("#"):
            raise AssertionError(f"{path.name}: a line that is not a pinned, hashed requirement: {line!r}")
    return entries


LOCKED = {name: read_lock(REQ / name) for name in LOCKS}


def declared(extras: tuple[str, ...]) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(ENV)]


@pytest.mark.parametrize("lock", LOCKS)
def test_every_package_is_pinned_with_hashes(lock):
    entries = LOCKED[lock]
    assert len(entries) > 100
    unhashed = [name for name, (_, hashes) in entries.items() if not hashes]
    assert not unhashed, f"{lock}: no hash for {unhashed}"


@pytest.mark.parametrize("lock", LOCKS)
def test_the_lock_satisfies_what_pyproject_declares(lock):
    entries = LOCKED[lock]
    for req in declared(LOCKS[lock]):
        name = canonicalize_name(req.name)
        assert name in entries, f"{lock} lacks {req} (pyproject.toml): run make lock"
        version = entries[name][0]
        assert req.specifier.contains(Version(version), prereleases=True), (
            f"{lock} pins {name}=={version}, outside pyproject.toml's {req}: run make lock")


def test_each_environment_holds_only_its_set():
    dev_only = {"dvc", "pytest", "moto", "hypothesis", "uv", "torchmetrics", "vl-convert-python"}
    pose_only = {"mediapipe", "absl-py", "flatbuffers"}
    for lock in ("worker-cpu.lock", "worker-cuda.lock"):
        assert not (dev_only | pose_only) & set(LOCKED[lock]), f"{lock} carries tools a worker never runs"
    assert not pose_only & set(LOCKED["dev.lock"])
    for dropped in ("jax", "jaxlib", "opencv-contrib-python", "sentencepiece", "sounddevice"):
        assert dropped not in LOCKED["pose.lock"], f"pose.lock has {dropped} (requirements/pose-overrides.txt drops it)"


def test_torch_is_the_cpu_build_on_cpus_and_the_cuda_build_in_the_gpu_image():
    version = str(Requirement(next(r for r in PYPROJECT["project"]["dependencies"] if r.startswith("torch"))).specifier)
    assert version == "==2.13.0"
    for lock in CPU_LOCKS:
        assert LOCKED[lock]["torch"][0] == "2.13.0+cpu", lock
        assert not [n for n in LOCKED[lock] if n.startswith("nvidia-") or n == "triton"], lock
    cuda = LOCKED["worker-cuda.lock"]
    assert cuda["torch"][0] == "2.13.0" and "triton" in cuda and any(n.startswith("nvidia-cudnn") for n in cuda)
    assert "torch==2.13.0+cpu" in (REQ / "torch-cpu.txt").read_text()


def test_a_package_has_one_version_in_every_environment_that_has_it():
    allowed = {"torch"}  # its build; the CUDA build's own dependencies exist in one lock only
    pose_allowed = {"protobuf"}  # requirements/pose-overrides.txt
    base = LOCKED["dev.lock"]
    for lock, entries in LOCKED.items():
        skip = allowed | (pose_allowed if lock == "pose.lock" else set())
        differ = {n: (base[n][0], v) for n, (v, _) in entries.items() if n in base and n not in skip and base[n][0] != v}
        assert not differ, f"{lock} and dev.lock disagree (dev, {lock}): {differ}"
    assert LOCKED["pose.lock"]["protobuf"][0].startswith("6.")


def test_the_bootstrap_installs_the_uv_dev_lock_keeps():
    boot = read_lock(REQ / "bootstrap.lock")
    assert list(boot) == ["uv"] and boot["uv"] == LOCKED["dev.lock"]["uv"]


def test_the_lint_tools_are_pinned_to_the_locked_versions_and_run_by_ci():
    # The findings make lint reports depend on the ruff and mypy release: exactly one of each, the
    # one dev.lock installs, runs locally and in CI (.ci/run: make lint, then make test).
    dev = {canonicalize_name(r.name): r for r in declared(("dev",))}
    for tool in ("ruff", "mypy", "types-pyyaml"):
        (pin,) = dev[tool].specifier
        assert pin.operator == "==", f"pyproject.toml: {tool} {pin} is not an exact pin"
        assert LOCKED["dev.lock"][tool][0] == pin.version, f"dev.lock pins {tool} {LOCKED['dev.lock'][tool][0]}"
    recipe = re.search(r"^lint: \$\(STAMP\)\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), flags=re.M)
    assert recipe, "Makefile has no lint target on $(STAMP)"
    assert recipe.group(1).split("\n")[:3] == [
        "\t$(BIN)/ruff format --check pipelines datasets model",
        "\t$(BIN)/ruff check pipelines datasets model",
        "\t$(BIN)/mypy",
    ]
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line.startswith("make ")]
    assert ci == ["make lint", "make test"]


def test_no_dependency_list_outside_pyproject_and_the_locks():
    stray = sorted(p.name for p in ROOT.glob("*.txt") if re.match(r"(requirements|constraints)", p.name))
    assert not stray, f"dependency lists beside pyproject.toml: {stray}"
    assert sorted(p.name for p in REQ.glob("*.lock")) == sorted([*LOCKS, "bootstrap.lock"])
    # Runtime envs ship code only: packages come from the images (or .venv for a local head).
    envs = {"infra/runtime_env.yaml": yaml.safe_load((ROOT / "infra/runtime_env.yaml").read_text())}
    for path in sorted((ROOT / "infra").glob("*.yaml")):
        for doc in manifests.load(path):
            if manifests.kind(doc) == "rayjob":
                envs[f"{path.name}: runtimeEnvYAML"] = yaml.safe_load(doc["spec"].get("runtimeEnvYAML") or "{}")
            if manifests.kind(doc) == "cluster-launcher":
                commands = [c for key, v in doc.items() if key.endswith("_commands") for c in v or []]
                installs = [c for c in commands if re.search(r"\b(pip|uv|conda)\b.*\binstall\b", c)]
                assert not installs, f"{path.name} installs packages on the nodes: {installs}"
                assert not [m for m in (doc.get("file_mounts") or {}).values() if "requirements" in m]
    for where, env in envs.items():
        assert not {"pip", "uv", "conda", "py_modules"} & set(env or {}), f"{where} installs packages per job"
    # The Makefile installs only from locks.
    makefile = (ROOT / "Makefile").read_text()
    installs = [line for line in makefile.splitlines()
                if re.search(r"pip (install|sync)|SYNC\)", line) and not line.startswith("SYNC =")]
    assert installs
    for line in installs:
        assert re.search(r"requirements/[a-z-]+\.lock", line), f"Makefile installs from no lock: {line.strip()}"


def _make_var(name: str) -> str:
    m = re.search(rf"^{name}\s*[?:]?=\s*(\S+)\s*$", (ROOT / "Makefile").read_text(), flags=re.M)
    assert m, f"Makefile sets no {name}"
    return m.group(1)


def test_the_images_install_the_worker_locks_and_the_manifests_name_them():
    dockerfile = (ROOT / "infra/Dockerfile").read_text()
    assert re.search(r"^ARG LOCK=requirements/worker-cpu\.lock$", dockerfile, flags=re.M)
    assert re.search(r"^COPY .*\$\{LOCK\} ", dockerfile, flags=re.M)
    assert "install-lock.sh" in dockerfile and "pip install" not in dockerfile  # the one installer
    ray = LOCKED["worker-cpu.lock"]["ray"][0]
    base = _make_var("RAY_BASE_IMAGE")
    assert base == f"rayproject/ray:{ray}-py311"
    assert re.search(rf"^ARG BASE_IMAGE={re.escape(base)}$", dockerfile, flags=re.M)
    image, tag = _make_var("IMAGE"), _make_var("IMAGE_TAG")
    assert tag == PYPROJECT["project"]["version"]
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\nimage:"):].split("\n\n")[0].replace("\\\n", " ")
    builds = [line for line in recipe.splitlines() if "docker build" in line]
    assert any("BASE_IMAGE=$(RAY_BASE_IMAGE) " in b and "worker-cpu.lock" in b and "$(IMAGE):$(IMAGE_TAG)-cpu" in b
               for b in builds), builds
    assert any("BASE_IMAGE=$(RAY_BASE_IMAGE)-gpu " in b and "worker-cuda.lock" in b and "$(IMAGE):$(IMAGE_TAG)-cuda" in b
               for b in builds), builds
    cpu, cuda = f"{image}:{tag}-cpu", f"{image}:{tag}-cuda"

    job = next(d for d in manifests.load(ROOT / "infra/rayjob.yaml") if manifests.kind(d) == "rayjob")
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == ray
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in head] == [cpu]
    for group in cluster["workerGroupSpecs"]:
        gpus = manifests.raycluster_gpus({"workerGroupSpecs": [group]})
        assert {c["image"] for c in group["template"]["spec"]["containers"]} == {cuda if gpus else cpu}, group["groupName"]
    launcher = yaml.safe_load((ROOT / "infra/cluster.yaml").read_text())
    assert launcher["docker"].get("head_image") == cpu and launcher["docker"].get("worker_image") == cuda
    assert "image" not in launcher["docker"]
    gpu_types = [t for name, t in launcher["available_node_types"].items()
                 if name != launcher["head_node_type"] and manifests.node_type_gpus(t) > 0]
    assert gpu_types and all("docker" not in t for t in gpu_types)


def test_the_registered_models_require_the_locked_versions():
    from pipelines.registry.publish import MODEL_DISTRIBUTIONS, project_pip_requirements

    pins = dict(r.split("==") for r in project_pip_requirements())
    assert set(pins) == set(MODEL_DISTRIBUTIONS)
    for lock in LOCKS:
        for dist, version in pins.items():
            locked = LOCKED[lock][canonicalize_name(dist)][0].split("+")[0]
            assert version == locked, f"a registered model asks for {dist}=={version}; {lock} has {locked}"


def test_this_environment_passes_pip_check():
    uv = Path(sys.prefix) / "bin" / "uv"
    if not uv.exists():
        pytest.skip("not an environment made by make setup (no uv in it)")
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        done = subprocess.run([str(uv), "pip", "check", "--python", sys.executable], capture_output=True, text=True,
                              timeout=120)
    else:  # .venv-pose: only mediapipe's overridden declarations may show
        done = subprocess.run(["bash", "infra/pip-check-pose.sh", str(uv), sys.executable], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_make_setup_environment_is_exactly_its_lock():
    if Path(sys.prefix).resolve().parent != ROOT or Path(sys.prefix).name not in (".venv", ".venv-pose"):
        pytest.skip(f"not running in this checkout's .venv or .venv-pose ({sys.prefix})")
    from importlib import metadata

    lock = LOCKED["pose.lock" if Path(sys.prefix).name == ".venv-pose" else "dev.lock"]
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    assert installed == {n: v for n, (v, _) in lock.items()}

