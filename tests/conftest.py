import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Two cores are shared by everything on a CI box: keep torch from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "1")
