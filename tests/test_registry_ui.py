"""The MLflow UI shows the registered model with its aliases (headless Chromium; slow suite)."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import ui
from pipelines.registry import publish
from tests.test_registry_promotion import eval_doc, example_input, exported_generator

pytestmark = pytest.mark.slow


@pytest.mark.skipif(ui.chromium() is None, reason="Debian chromium not installed (apt-get install -y chromium)")
def test_model_page_shows_name_and_aliases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    backend = f"sqlite:///{tmp_path / 'mlruns.db'}"
    artifacts = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", backend)
    mlflow.set_tracking_uri(backend)
    mlflow.MlflowClient().create_experiment("attnflow", artifact_location=artifacts)
    try:
        example = example_input(exported_generator(1))
        good = publish.register_generator(exported_generator(1), example, model_name="attnflow-pose",
                                           metrics_doc=eval_doc(0.6), primary_metric="ssim", experiment="attnflow")
        worse = publish.register_generator(exported_generator(2), example, model_name="attnflow-pose",
                                            metrics_doc=eval_doc(0.5), primary_metric="ssim", experiment="attnflow")
    finally:
        mlflow.set_tracking_uri(None)
    assert good.promoted and not worse.promoted

    shot = tmp_path / "model.png"
    with ui.running_server(backend, artifacts) as base:
        dom = ui.render(ui.model_page(base, "attnflow-pose"), shot)
    assert "attnflow-pose" in dom
    assert "champion" in dom and "candidate" in dom
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
