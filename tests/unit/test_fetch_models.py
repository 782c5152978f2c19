"""fetch_models: on the gpu profile without a reachable hub a clear error, not a traceback; the
end-of-turn file checked against the release it was pinned from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "eot: " in done.stdout, "the end-of-turn model is verified before any download"
    assert "could not fetch weights" in done.stderr and "Traceback" not in done.stderr


def test_smart_turn_is_verified_against_its_pinned_digest(tmp_path: Path) -> None:
    from models.base import WeightsMissing
    from models.weights import smart_turn_path, verify_smart_turn

    path = verify_smart_turn()
    assert path == smart_turn_path() and path.name == "smart-turn-v3.2-cpu.onnx"
    assert "site-packages/pipecat/" in path.as_posix()
    other = tmp_path / path.name
    other.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(ValueError, match="sha256"):
        verify_smart_turn(other)
    with pytest.raises(WeightsMissing, match="pipecat-ai"):
        verify_smart_turn(tmp_path / "missing.onnx")
