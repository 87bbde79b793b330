# Fresh machine: `make demo` runs the main job end to end, `make test` runs the tests.
# Both create the virtualenv (.venv) and install the pinned, CPU-only dependencies first.

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CKPT   ?= checkpoints/qatie-c16.pt
SIZE   ?= 256x256
OUT    ?= out/demo
TUNE_TRIALS ?= 64

.PHONY: setup test demo clean

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

clean:
	rm -rf $(OUT) .pytest_cache
