# Fresh machine: `make demo` runs the main job end to end, `make test` runs the tests.
# Both create the virtualenv (.venv) and install the pinned, CPU-only dependencies first.

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CKPT   ?= checkpoints/qatie-c16.pt
SIZE   ?= 256x256
OUT    ?= out/demo
TUNE_TRIALS ?= 64
RPC_PORT ?= 9190
RPC_KEY ?= demo-x86
TRACKER := 127.0.0.1:$(RPC_PORT)

# Extra pytest flags, e.g. PYTEST_FLAGS=--fail-on-skip (what .ci/run passes). The suite runs on
# 3 workers (pytest-xdist) on 2 cores: some tests wait (session timeouts, trackers that never
# answer, emulator start-up) and a third worker keeps both cores busy meanwhile (measured: 603-645 s,
# 680 s with 2); the fast set has no such waits and runs on 2 (191 s, 211 s with 3). Tests sharing
# a module's tracker or builds share a worker (loadgroup).
PYTEST_FLAGS ?=
WORKERS ?= 3
FAST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q --dist loadgroup
FAST_MARKERS := not (rpc or qemu or pocl or tune)

.PHONY: setup test test-fast demo deploy offline-check clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PYTEST) -n $(WORKERS) $(PYTEST_FLAGS)

# Without emulation, OpenCL, RPC and tuning: the quick loop while editing.
test-fast: setup
	$(PYTEST) -n $(FAST_WORKERS) -m "$(FAST_MARKERS)" $(PYTEST_FLAGS)

demo: setup
	$(VENV)/bin/qatie info --width 16
	$(VENV)/bin/qatie eval $(CKPT) --json $(OUT)/eval.json --png $(OUT)/eval.png
	$(VENV)/bin/qatie export $(CKPT) --size $(SIZE) -o $(OUT)/qatie.onnx
	$(VENV)/bin/qatie-compile targets
	$(VENV)/bin/qatie-compile inspect $(OUT)/qatie.onnx
	$(VENV)/bin/qatie-compile tune --target x86-host $(OUT)/qatie.onnx --trials $(TUNE_TRIALS) --only conv2d \
		--log-dir $(OUT)/tuning_logs/x86-host --curve $(OUT)/tuning_curve.json
	$(VENV)/bin/qatie-compile --target x86-host $(OUT)/qatie.onnx -o $(OUT)/x86-host --tuning-log $(OUT)/tuning_logs/x86-host
	$(MAKE) deploy

# A local device farm: tracker + one RPC server on 127.0.0.1, the built model benched and
# profiled through them exactly as on a phone, both stopped afterwards.
deploy: setup
	@bash -c 'set -e; \
	  $(VENV)/bin/qatie-compile rpc tracker --port $(RPC_PORT) > $(OUT)/tracker.log 2>&1 & tracker=$$!; \
	  $(VENV)/bin/qatie-compile rpc server --tracker $(TRACKER) --key $(RPC_KEY) > $(OUT)/server.log 2>&1 & server=$$!; \
	  trap "kill $$server $$tracker" EXIT; \
	  for i in $$(seq 60); do $(VENV)/bin/qatie-compile devices --tracker $(TRACKER) 2>/dev/null | grep -q "1 free" && break; sleep 1; done; \
	  $(VENV)/bin/qatie-compile devices --tracker $(TRACKER); \
	  $(VENV)/bin/qatie-compile bench $(OUT)/x86-host --tracker $(TRACKER) --key $(RPC_KEY) --ckpt $(CKPT); \
	  $(VENV)/bin/qatie-compile profile $(OUT)/x86-host --tracker $(TRACKER) --key $(RPC_KEY) --min-ms 20'

# Checking builds without a device (needs qemu-user, g++-aarch64-linux-gnu, gcc, llvm,
# pocl-opencl-icd): the shipped model built for both ARM Linux targets and benched on emulated
# Cortex-A53/A76 devices through a local tracker (bench adds each build's estimated
# Cortex-A53/A55/A76 cycles: qemu block counts costed by llvm-mca), then its Mali/Adreno kernels
# run on PoCL.
OFFLINE_SIZE ?= 64x64
OFFLINE := $(OUT)/offline
offline-check: setup
	mkdir -p $(OFFLINE)
	$(VENV)/bin/qatie export $(CKPT) --size $(OFFLINE_SIZE) -o $(OFFLINE)/qatie.onnx
	$(VENV)/bin/qatie-compile --target arm64-linux $(OFFLINE)/qatie.onnx -o $(OFFLINE)/arm64-linux
	$(VENV)/bin/qatie-compile --target arm64-linux-dotprod $(OFFLINE)/qatie.onnx -o $(OFFLINE)/arm64-linux-dotprod
	@bash -c 'set -e; \
	  $(VENV)/bin/qatie-compile rpc tracker --port $(RPC_PORT) > $(OFFLINE)/tracker.log 2>&1 & tracker=$$!; \
	  trap "kill $$tracker" EXIT; \
	  for i in $$(seq 60); do $(VENV)/bin/qatie-compile devices --tracker $(TRACKER) >/dev/null 2>&1 && break; sleep 1; done; \
	  $(VENV)/bin/qatie-compile emulate arm64 --tracker $(TRACKER) --target arm64-linux > $(OFFLINE)/a53.log 2>&1 & a53=$$!; \
	  $(VENV)/bin/qatie-compile emulate arm64 --tracker $(TRACKER) --target arm64-linux-dotprod > $(OFFLINE)/a76.log 2>&1 & a76=$$!; \
	  trap "kill $$a53 $$a76 $$tracker" EXIT; \
	  for i in $$(seq 120); do [ $$($(VENV)/bin/qatie-compile devices --tracker $(TRACKER) | grep -cE "^ +arm64-linux(-dotprod)?-emu +1 registered, 1 free") = 2 ] && break; sleep 1; done; \
	  $(VENV)/bin/qatie-compile bench $(OFFLINE)/arm64-linux --tracker $(TRACKER) --key arm64-linux-emu --repeats 3; \
	  $(VENV)/bin/qatie-compile bench $(OFFLINE)/arm64-linux-dotprod --tracker $(TRACKER) --key arm64-linux-dotprod-emu --repeats 3'
	$(VENV)/bin/qatie-compile check-opencl $(OFFLINE)/qatie.onnx --run

clean:
	rm -rf $(OUT) .pytest_cache
