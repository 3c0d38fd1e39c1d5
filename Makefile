# Keras .h5 -> ONNX -> PyTorch, proven equal. `make help` lists the targets.
# Artifacts are real file targets with their true prerequisites: rerunning with nothing changed rebuilds nothing.
# A stage's code prerequisites are every file its module reaches (function-level imports and the TensorFlow
# process it launches included), read from the code by pipeline/common/import_graph.py into $(CODE_MK).

MODEL  ?= data/models/pretrainedResnet.h5## the Keras model to convert
MIRROR ?= ../shared## offline mirror folder (layout as ../shared); used before any download
OUT    ?= artifacts## artifacts root; each model gets $(OUT)/<model file stem>/
DATA   ?= data## fetched model and CIFAR-10 test set
INPUTS ?=## optional .npy of your own sample inputs, shape (N, *input shape), added to every check
ZOO    ?=## optional comma-separated architectures for `make zoo`, `trained` for the trained members, `sequences` for the sequence models (default: all 13 and those)
FUZZ_SAMPLE ?=## optional number of cases of each base model for `make fuzz`, drawn with a fixed seed (default: every case)
VARIANTS ?=## optional semicolon-separated settings for `make aot-options` (default: all)
INPUT_RANGE ?=## optional LO,HI to draw the random check inputs from (default: the model's own range, else several)
MODELS ?=## the Keras files `make floor` takes (space-separated)

PY    := .venv/bin/python
# The interpreter that creates .venv: Python 3.11, the version the pinned stack installs on.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
STEM  := $(basename $(notdir $(MODEL)))
DIR   := $(OUT)/$(STEM)
ARGS  := --model $(MODEL) --data $(DATA) --out $(OUT)
TEST_SET := $(DATA)/cifar-10-batches-bin/test_batch.bin
CODE_MK  := .make/code.mk
# Every rule that runs $(PY) waits for the install (order-only: a reinstall alone rebuilds no artifact), so that
# `make all` or `make test` on a fresh clone installs first.
VENV     := .venv/.installed

.PHONY: help install fetch onnx torch native verify evaluate bench aot-options zoo sequences fuzz floor all test zoo-test clean
.DEFAULT_GOAL := help
# A target whose recipe fails is removed: never a half-written artifact that a rerun takes for done.
.DELETE_ON_ERROR:

help: ## list the targets and variables
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 12
	@echo; echo "Variables:"; grep -hE '^[A-Z]+ +\?=' $(MAKEFILE_LIST) | sed 's/ *?= */ = /; s/##/\t# /'

$(CODE_MK): $(shell find pipeline -name '*.py')
	@mkdir -p $(@D)
	@$(PYTHON) -m pipeline.common.import_graph make > $@.tmp && mv $@.tmp $@
include $(CODE_MK)

install: $(VENV) ## create .venv with the pinned stack (idempotent)
$(VENV): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv .venv
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

fetch: | $(VENV) ## put the model and test set under $(DATA), SHA-256 checked (mirror first)
	$(PY) -m pipeline fetch --data $(DATA) --mirror $(MIRROR)

# The default model and the test set come from `make fetch`; a user's own MODEL must already exist.
$(DATA)/models/%.h5: | $(VENV)
	$(PY) -m pipeline fetch --data $(DATA) --mirror $(MIRROR)
$(TEST_SET): | $(VENV)
	$(PY) -m pipeline fetch --data $(DATA) --mirror $(MIRROR)

onnx: $(DIR)/model.onnx ## stage 1: Keras -> model.onnx (+ Keras reference outputs)
$(DIR)/model.onnx: $(MODEL) $(TEST_SET) $(INPUTS) $(CODE_onnx) | $(VENV)
	$(PY) -m pipeline onnx $(ARGS) $(if $(INPUTS),--inputs $(INPUTS)) $(if $(INPUT_RANGE),--input-range $(INPUT_RANGE))

torch: $(DIR)/model.pt2 ## stage 2: model.onnx -> model.pt2 (torch.export), model_opt.pt2 (optimized), model_aoti.pt2 (AOTInductor), model_fx.py
# the batch-1 model's convolution kernel is C++, which the import graph does not see
$(DIR)/model.pt2 $(DIR)/model_opt.pt2 $(DIR)/model_aoti.pt2 &: $(DIR)/model.onnx $(CODE_torch) $(wildcard pipeline/runtimes/kernels/*.cpp) | $(VENV)
	$(PY) -m pipeline torch $(ARGS)

native: $(DIR)/native/model.py ## the Keras file alone -> native/model.py + model.safetensors + weights_map.json (trainable)
$(DIR)/native/model.py $(DIR)/native/model.safetensors $(DIR)/native/weights_map.json &: $(MODEL) $(CODE_native) | $(VENV)
	$(PY) -m pipeline native $(ARGS)

# verify waits on the native stage having been tried, not on its success: native_status.json says built or
# why not (any native stage run records it), and verify compares the native model only where it was built.
# touch: the stage leaves the file as it is when it fails as recorded (common/stage_status.py).
# After the onnx stage (order only): the native stage reads which Keras loaded the file, and Keras's stored outputs.
$(DIR)/native_status.json: $(MODEL) $(CODE_native) | $(DIR)/model.onnx $(VENV)
	$(PY) -m pipeline native $(ARGS) --keep-going
	@touch $@

verify: $(DIR)/verify.json ## stage 3: compare Keras, onnxruntime, FX, model.pt2, native (where it can be made), hand-written model
$(DIR)/verify.json: $(DIR)/model.onnx $(DIR)/model.pt2 $(DIR)/model_opt.pt2 $(DIR)/model_aoti.pt2 $(DIR)/native_status.json $(TEST_SET) $(CODE_verify) | $(VENV)
	$(PY) -m pipeline verify $(ARGS)

evaluate: $(DIR)/evaluate.json ## stage 4: CIFAR-10 accuracy of model.pt2, gated at 0.85
$(DIR)/evaluate.json: $(DIR)/model.pt2 $(TEST_SET) $(CODE_evaluate) | $(VENV)
	$(PY) -m pipeline evaluate $(ARGS)

bench: $(DIR)/bench.json ## batch-1 latency and images/s of Keras, onnxruntime, onnx2torch, model.pt2, model_opt.pt2 (eager, compiled), model_aoti.pt2
$(DIR)/bench.json: $(DIR)/model.pt2 $(DIR)/model_opt.pt2 $(DIR)/model_aoti.pt2 $(TEST_SET) $(CODE_bench) | $(VENV)
	$(PY) -m pipeline bench $(ARGS)

aot-options: $(DIR)/model_opt.pt2 $(TEST_SET) | $(VENV) ## each AOTInductor setting for model_aoti.pt2 compiled, checked and timed against onnxruntime: aot_options.md
	$(PY) -m pipeline aot-options $(ARGS) $(if $(VARIANTS),--variants "$(VARIANTS)")

zoo: | $(VENV) ## Keras Applications (calibrated random weights) and trained members (tf-keras .h5, Keras 3 .keras) through onnx, torch, native, verify: $(OUT)/zoo/summary.md
	$(PY) -m pipeline zoo --out $(OUT) $(if $(ZOO),--models $(ZOO))

fuzz: $(MODEL) | $(VENV) ## damaged and hostile copies of MODEL and of base models of other kinds: each taken, or refused in one line: $(OUT)/fuzz/summary.md
	$(PY) -m pipeline fuzz $(ARGS) $(if $(FUZZ_SAMPLE),--sample $(FUZZ_SAMPLE))

all: fetch verify evaluate | $(VENV) ## everything, then a summary table
	@$(PY) -m pipeline report $(ARGS)

test: | $(VENV) ## run the test suite (real-model tests read the mirror at MIRROR)
	PIPELINE_MIRROR=$(MIRROR) $(PY) -m pytest

sequences: | $(VENV) ## trained recurrent, text and attention models (tf-keras .h5, Keras 3 .keras) through onnx, torch, native, verify: rows of $(OUT)/zoo/summary.md
	$(PY) -m pipeline zoo --out $(OUT) --models sequences

floor: | $(VENV) ## MODELS through the bare tools (tf2onnx + onnx2torch, no checks) and `convert`: the pipeline must pass wherever they equal Keras: $(OUT)/floor/floor.md
	$(PY) -m pipeline floor $(MODELS) --data $(DATA) --out $(OUT)/floor

zoo-test: | $(VENV) ## the tests on large zoo models `make test` leaves out (EfficientNetV2B0 .h5; weight faults in EfficientNetB0, DenseNet121)
	PIPELINE_MIRROR=$(MIRROR) $(PY) -m pytest -m zoo

clean: ## remove the generated artifacts (keeps .venv and data)
	rm -rf $(OUT)/*/
