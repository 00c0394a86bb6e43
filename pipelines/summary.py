"""Print where the pipeline's outputs are after ``make run``.

    python -m pipelines.summary        (in the project root; the Makefile runs it last)

Lists the raw datasets, shards, training runs, metrics, figures and where the registry's
aliases point now, on stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.runs.folder import RunFolder
from pipelines.runs.records import RegistrationReceipt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.summary", description=__doc__.split("\n\n")[0])
    add_log_level_arg(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, "summary")
    root = Path.cwd()
    print("\nAttnFlow outputs:")
    for raw in sorted((root / "data" / "raw").glob("*")):
        print(f"  raw dataset      {raw.relative_to(root)}/")
    for manifest in sorted((root / "data" / "shards").glob("*/manifest.json")):
        info = json.loads(manifest.read_text())
        counts = ", ".join(
            f"{split}: {s.get('images_written', '?')} images / {s.get('pairs_written', '?')} pairs"
            for split, s in info.get("splits", {}).items()
        )
        print(f"  shards           {manifest.parent.relative_to(root)}/  ({counts})")
    runs = RunFolder.under(root)
    for run in runs:
        if run.summary.is_file():
            print(f"  training run     {run.path.relative_to(root)}/")
    for path in sorted((root / "metrics").glob("*.json")):
        print(f"  metrics          {path.relative_to(root)}")
    for path in sorted((root / "reports" / "figures").glob("*.png")):
        print(f"  figure           {path.relative_to(root)}")
    registered = [path for run in runs for path in run.registrations()]
    names = sorted({RegistrationReceipt.load(path).model_name for path in registered})
    for line in registry_lines(names):
        print(f"  registered model {line}")
    if registered:
        print("\nBrowse runs and models: make mlflow-ui, then open http://127.0.0.1:5000/#/models")
    return 0


def registry_lines(names: list[str]) -> list[str]:
    """Where the aliases point now, from the registry itself (the runs' registered-*.json files
    only record what each registration decided at the time)."""
    try:
        from mlflow import MlflowClient

        from pipelines.registry.promotion import TAG_PRIMARY_METRIC, TAG_PRIMARY_VALUE
        from pipelines.tracking.journal import tracking_uri

        client = MlflowClient(tracking_uri())
        lines = []
        for name in names:
            parts = []
            found = {}
            for alias in ("champion", "candidate"):
                try:
                    v = client.get_model_version_by_alias(name, alias)
                except Exception:  # noqa: BLE001, S112 - the alias is not set
                    continue
                found[alias] = v
                metric, value = v.tags.get(TAG_PRIMARY_METRIC), v.tags.get(TAG_PRIMARY_VALUE)
                score = f" ({metric} {float(value):.4f})" if metric and value else ""
                parts.append(f"@{alias} = v{v.version}{score}")
            candidate = found.get("candidate")
            if "champion" not in found and candidate is not None:
                # Nothing has earned the champion alias yet (register.promotion_policy): say why.
                parts.insert(0, "no @champion yet")
                parts.append(f"not promoted: {candidate.tags.get('promotion', 'no reason recorded')}")
            elif candidate is not None and str(candidate.version) != str(found["champion"].version):
                parts.append(
                    f"v{candidate.version} not promoted: {candidate.tags.get('promotion', 'no reason recorded')}"
                )
            lines.append(f"{name}: " + ", ".join(parts or ["no aliases"]))
        return lines
    except Exception as exc:  # noqa: BLE001 - the summary must not fail on a registry it cannot read
        from pipelines.tracking.redact import redact

        return [f"(registry not readable: {type(exc).__name__}: {redact(str(exc))})"]


if __name__ == "__main__":
    raise SystemExit(main())
