import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Two cores are shared by everything on a CI box: keep torch from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "1")


# The pose run of make test (ATTNFLOW_REQUIRE_POSE=1, in .venv-pose) has no Ray Serve: its
# grpcio-reflection is left out (requirements/pose-overrides.txt). These modules hold no pose test.
collect_ignore = ["test_serving_ray.py", "test_faults_serve.py"] if os.environ.get("ATTNFLOW_REQUIRE_POSE") == "1" else []
