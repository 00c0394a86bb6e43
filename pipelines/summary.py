"""Print where the pipeline's outputs are after ``make run``."""
from __future__ import annotations

import json
from pathlib import Path


def main() -> int:
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
    for path in sorted((root / "runs").glob("*/summary.json")):
        print(f"  training run     {path.parent.relative_to(root)}/")
    for path in sorted((root / "metrics").glob("*.json")):
        print(f"  metrics          {path.relative_to(root)}")
    for path in sorted((root / "reports" / "figures").glob("*.png")):
        print(f"  figure           {path.relative_to(root)}")
    registered = sorted((root / "runs").glob("*/registered-*.json"))
    for path in registered:
        reg = json.loads(path.read_text())
        print(f"  registered model {reg['model_name']} v{reg['version']} (candidate); champion: "
              f"v{reg['champion_version']}  [{reg['reason']}]")
    if registered:
        print("\nBrowse runs and models: make mlflow-ui, then open http://127.0.0.1:5000/#/models")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
