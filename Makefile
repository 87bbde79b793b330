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

.PHONY: setup test demo deploy clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q

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

clean:
	rm -rf $(OUT) .pytest_cache
