# emo — every target installs what it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EMO := $(VENV)/bin/emo
STAMP := $(VENV)/.installed

DATASET ?= mer2024
DATA_ROOT ?= data/$(DATASET)
MODELS ?= hubert_large:16-21 egemaps
OUT ?= features
DEVICE ?= auto
LEXICON ?=
# make features: TEXT_COLUMN= (transcript column, e.g. english for MER's NRC-VAD) and NAME= (store folder, e.g. mer2026-t2)
TEXT_COLUMN ?=
NAME ?=
SHARED ?= ../shared/data

RUFF := $(VENV)/bin/ruff

.PHONY: install test test-fast lint features demo proofs bench bench-gpu models-mtcnn clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q -n 2 --dist loadgroup

# the inner loop: no test marked slow, none that reads the real recordings (under 2 minutes on 2 cores)
test-fast: install
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "not slow and not shared"

lint: install
	$(RUFF) check .

features: install
	$(EMO) extract --dataset $(DATASET) --root $(DATA_ROOT) $(foreach m,$(MODELS),--encoder $(m)) --out $(OUT) --device $(DEVICE) $(if $(LEXICON),--lexicon $(LEXICON)) $(if $(TRACK),--track $(TRACK)) $(if $(TEXT_COLUMN),--text-column $(TEXT_COLUMN)) $(if $(NAME),--name $(NAME))

demo: install
	$(PY) -m emo.demo --out demo

proofs: install
	$(PY) proofs/run_all.py --shared $(SHARED)

bench: install
	$(PY) bench/run_all.py

bench-gpu: install
	$(PY) bench/run_all.py --gpu

models-mtcnn: install
	$(EMO) models fetch mtcnn

clean:
	rm -rf $(VENV) features runs demo .pytest_cache
