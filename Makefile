# `make serve` sets everything up and serves (page at http://127.0.0.1:3000/ui/); `make repro` rebuilds
# the model; `make test` runs the tests. Each sets up the environment first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Where FER2013 comes from when data/fer2013.zip is missing (a development checkout has ../shared).
FER2013 ?= ../shared/data/fer2013.zip
export PATH := $(abspath $(BIN)):$(PATH)

# A team's MLflow tracking server (docs/scaleout.md): runs and registry in PostgreSQL, artifacts
# served by the server from MLFLOW_ARTIFACTS; clients set MLFLOW_TRACKING_URI=http://host:port.
MLFLOW_BACKEND ?= postgresql://mlflow@127.0.0.1:5432/mlflow
MLFLOW_ARTIFACTS ?= $(abspath mlflow-server-artifacts)
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000

.PHONY: setup repro test serve mlflow-server clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	$(BIN)/pip check
	touch $@

data/fer2013.zip:
	@if [ -f "$(FER2013)" ]; then mkdir -p data && cp "$(FER2013)" $@; \
	else echo "FER2013 not found: download the Kaggle zip (msambare/fer2013) to data/fer2013.zip, or run 'make repro FER2013=/path/to/fer2013.zip'"; exit 2; fi

repro: setup data/fer2013.zip
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

# The imported MLflow champion if there is one, else the bundled model; page at http://HOST:PORT/ui/
HOST ?= 127.0.0.1
PORT ?= 3000
serve: setup
	$(BIN)/bentoml serve --host $(HOST) --port $(PORT)

mlflow-server: setup
	$(BIN)/mlflow server --backend-store-uri $(MLFLOW_BACKEND) --artifacts-destination $(MLFLOW_ARTIFACTS) \
		--host $(MLFLOW_HOST) --port $(MLFLOW_PORT)

clean-venv:
	rm -rf $(VENV)
