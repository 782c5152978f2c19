"""fetch_models on the gpu profile without a reachable hub: a clear error, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_fetch_without_hub_fails_clearly(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HF_HUB_OFFLINE": "1",
        "VIVA__MODELS__MODELS_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "scripts/fetch_models.py", "--profile", "gpu"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "could not fetch weights" in done.stderr and "Traceback" not in done.stderr
