"""The MLflow UI shows the registered model with its aliases, and a version's page its model card
(headless Chromium; slow suite).  Without Chromium the test is skipped, except under ``make
test-slow`` (``ATTNFLOW_REQUIRE_CHROMIUM=1``, after infra/ensure-chromium.sh), where it fails."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines import ui
from pipelines.registry import publish
from tests.test_registry_promotion import eval_doc, example_input, exported_generator

pytestmark = pytest.mark.slow


def need_chromium() -> None:
    if ui.chromium() is not None:
        return
    why = "Debian chromium not installed (infra/ensure-chromium.sh, or apt-get install -y chromium)"
    if os.environ.get("ATTNFLOW_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"{why}; ATTNFLOW_REQUIRE_CHROMIUM=1 (make test-slow) requires it")
    pytest.skip(why)


def test_model_page_shows_name_and_aliases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_chromium()
    import mlflow

    backend = f"sqlite:///{tmp_path / 'mlruns.db'}"
    artifacts = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", backend)
    mlflow.set_tracking_uri(backend)
    mlflow.MlflowClient().create_experiment("attnflow", artifact_location=artifacts)
    try:
        example = example_input(exported_generator(1))
        good = publish.register_generator(exported_generator(1), example, publish.RegistrationRequest(
            "attnflow-pose", eval_doc(0.6), "ssim", experiment="attnflow", promotion_policy="any_gain"))
        worse = publish.register_generator(exported_generator(2), example, publish.RegistrationRequest(
            "attnflow-pose", eval_doc(0.5), "ssim", experiment="attnflow", promotion_policy="any_gain"))
    finally:
        mlflow.set_tracking_uri(None)
    assert good.promoted and not worse.promoted

    shot = tmp_path / "model.png"
    with ui.running_server(backend, artifacts) as base:
        dom = ui.render(ui.model_page(base, "attnflow-pose"), shot)
        version_dom = ui.render(ui.model_page(base, "attnflow-pose", worse.version))
    assert "attnflow-pose" in dom
    assert "champion" in dom and "candidate" in dom
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    # The version page renders the model card's Markdown (headings, the scores block), no assistant panel.
    assert f"attnflow-pose v{worse.version}: pose transfer</h1>" in version_dom
    assert "<h2" in version_dom and "Scores</h2>" in version_dom and "champion stays v1" in version_dom
    assert "MLflow Assistant" not in version_dom
