PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench bench-quality clean install e2e browser label-studio

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# labelme's shape rasteriser is the reference the LabelMe import is tested against; the package
# itself pulls Qt, so only its files come (--no-deps: the test loads utils/shape.py alone)
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps 'labelme>=5.5'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m segkit.demo

# the browser test needs Debian's chromium; installed here when running as root (CI is)
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
		echo "could not install chromium: the browser test will be skipped"

# a real Label Studio for the test that plugs segkit's ML backend into it, in its own environment
# (it pins Django, numpy and others apart from segkit's; sentry-sdk 3 breaks its start-up)
LS_VENV := .venv-ls
$(LS_VENV)/bin/label-studio:
	$(PY) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q 'label-studio==1.23.2' 'sentry-sdk<3' || \
		echo "could not install label-studio: its test will be skipped"

label-studio: $(LS_VENV)/bin/label-studio

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/lint-imports
	$(BIN)/mypy src/segkit

# the three environments install side by side, then lint; the suite runs on WORKERS processes
# (pytest-xdist, one torch thread each; a test file stays on one worker, so its fixtures are
# built once) and lists its slowest tests at the end: where the suite's time goes
WORKERS ?= 2
test:
	$(MAKE) -j3 install browser label-studio
	$(MAKE) lint
	$(BIN)/python -m pytest tests -n $(WORKERS) --dist loadfile --durations=25

test-fast: $(STAMP) lint
	$(BIN)/python -m pytest tests -m "not slow" -n $(WORKERS) --dist loadfile

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# model quality against the write-ups' plain loops (about 50 min on 2 CPU cores); the extra
# brings scikit-image's sample photographs (14 MB wheel + networkx, imageio, tifffile)
bench-quality: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python benchmarks/quality.py

e2e: $(STAMP) label-studio
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
	$(BIN)/pip install -q -e '.[dev,e2e]'
	$(BIN)/python -m pytest tests -m e2e

clean:
	rm -rf runs demo_out .pytest_cache build dist src/*.egg-info
