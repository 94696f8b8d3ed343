# The two README commands: `make demo` and `make test` (each creates .venv and installs into it first).
VENV ?= .venv
PY := $(VENV)/bin/python
# A second venv with the legacy tflite-runtime 2.14 (needs numpy<2; wheels exist for Python 3.8-3.11 on
# x86_64/aarch64): the 'legacy' tests load our .tflite files in it. Best effort: skipped where no wheel exists.
LEGACY_VENV ?= .venv-legacy-tflite

.PHONY: demo test test-only install legacy-venv lint
$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[all,dev]'
	$(PY) -m pip install -q --no-deps 'onnx2tf==1.29.24'  # ONNX -> TFLite; its pins conflict (see pyproject)
	$(PY) -m pip install -q --no-deps 'tensorflow-model-optimization==0.8.1'  # convert's qat rung; pins absl-py~=1.2
	$(PY) -m pip install -q --no-deps 'tf-keras>=2.21,<2.22'  # its 'tensorflow' requirement: see pyproject's onnx-source
	@# a venv made before that got TensorFlow's full build over tensorflow-cpu (one folder, two distributions)
	@if [ "$$(uname -m)" = x86_64 ] && $(PY) -m pip show -q tensorflow >/dev/null 2>&1; then \
	  $(PY) -m pip uninstall -q -y tensorflow && \
	  $(PY) -m pip install -q --force-reinstall --no-deps 'tensorflow-cpu==2.21.*'; fi

legacy-venv:
	@test -x $(LEGACY_VENV)/bin/python && $(LEGACY_VENV)/bin/python -c "import tflite_runtime" 2>/dev/null || \
	  (python3 -m venv $(LEGACY_VENV) && $(LEGACY_VENV)/bin/pip install -q 'tflite-runtime==2.14.0' 'numpy<2') || \
	  (echo "note: no tflite-runtime 2.14 wheel for this Python/platform; the legacy tests will be skipped" && rm -rf $(LEGACY_VENV))

demo: install
	$(VENV)/bin/edgeproof demo

test: install legacy-venv test-only

test-only:
	@if [ -x $(LEGACY_VENV)/bin/python ]; then export EDGEPROOF_LEGACY_VENV=$(abspath $(LEGACY_VENV)); fi; \
	  $(PY) -m pytest -q

lint:
	$(VENV)/bin/ruff check .
