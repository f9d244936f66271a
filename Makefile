# pianotx: every target installs what it needs first. `make help` lists them.
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
DATA     ?= data
RENDER   := $(DATA)/render
DATASET  := $(DATA)/default
# The default dataset's features: three CQT bins per semitone, those of the bundled model
# (what paid most on the held-out piano), so a search can fine-tune it (init_from).
FEATURES ?= --bins-per-octave 36 --n-bins 252
SPACE    ?= search_spaces/quick.yaml
WORKERS  ?= 2
# TensorFlow flavour: CUDA build only where an NVIDIA GPU answers.
TF_EXTRA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP    := $(VENV)/.installed-$(TF_EXTRA)

.PHONY: help install venv-deps system-deps pianos data search search-distributed ui test lint clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-19s %s\n", $$1, $$2}'

install: venv-deps $(STAMP) ## Create .venv with pianotx (editable): enough to transcribe, no corpus tools

# Only what a virtual environment needs (python3-venv); the corpus tools come with the
# targets that render (`make data`, `make test`).
venv-deps:
	@$(PYTHON) -c "import ensurepip" 2>/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "pianotx needs python3-venv for .venv: apt-get install python3-venv (or pip install -e . in an environment of your own)"; exit 1; fi; \
	command -v apt-get >/dev/null || { echo "pianotx needs Python's venv module (python3-venv)"; exit 1; }; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(TF_EXTRA),dev]"
	touch $@

system-deps: ## The corpus tools: FluidSynth, TiMidity, the piano soundfonts and patches, npm, polyphone, ffmpeg (apt)
	@missing=""; \
	command -v fluidsynth >/dev/null || missing="$$missing fluidsynth"; \
	[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || missing="$$missing fluid-soundfont-gm"; \
	[ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || missing="$$missing timgm6mb-soundfont"; \
	command -v timidity >/dev/null || missing="$$missing timidity"; \
	[ -f /etc/timidity/freepats.cfg ] || missing="$$missing freepats"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v polyphone >/dev/null || missing="$$missing polyphone"; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "pianotx needs:$$missing; install them as root: apt-get install$$missing"; exit 1; fi; \
	if ! command -v apt-get >/dev/null; then echo "pianotx needs:$$missing (no apt-get here: install them yourself)"; exit 1; fi; \
	echo "installing$$missing"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null

# The Salamander grand: fetched from npm and built into an SF2 once, cached outside the
# repository; without it (offline, say) the render goes on with the other pianos.
pianos: system-deps install ## Build the Salamander piano (once: ~30 MB from npm, cached in ~/.cache/pianotx/pianos)
	@$(BIN)/python -m pianotx.render.salamander >/dev/null || echo "pianotx: going on without the Salamander piano"

data: pianos ## Render the default corpus and build the default dataset (skipped when up to date)
	@test -f $(RENDER)/render.json || $(BIN)/pianotx data render $(RENDER)
	$(BIN)/pianotx data build $(RENDER) $(DATASET) $(FEATURES)

search: data ## Run the default search (SPACE=...) and register the best model as `piano`
	$(BIN)/pianotx search $(SPACE) --data $(DATASET)

search-distributed: data ## The same search on this machine: an MLflow server, a chief, WORKERS=2 workers
	$(BIN)/pianotx search-distributed $(SPACE) --data $(DATASET) --workers $(WORKERS)

ui: install ## Open MLflow's UI on 127.0.0.1 over pianotx's store
	$(BIN)/pianotx ui

test: install pianos ## Run the test suite (slow tests included; the Salamander piano built first, so that its renders are tested)
	$(BIN)/python -m pytest -q

lint: install ## Ruff over the package, tests and benchmarks; mypy over the package
	$(BIN)/ruff check pianotx tests benchmarks
	$(BIN)/ruff format --check pianotx tests benchmarks
	$(BIN)/mypy

clean: ## Remove the virtual environment (keeps data/ and mlruns/)
	rm -rf $(VENV)
