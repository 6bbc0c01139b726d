# Set-up is automatic: every target creates .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-slow demo demo-sw venv dft-setup peers pbe-data clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# two one-thread pytest workers use both cores best (default suite ~4 min on 2 quiet cores, issue 50)
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2

test-slow: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 -m slow

# the product's real job: the shipped PBE-Si medium model -> Ge on 20 shipped PBE Ge structures, tested on 60
demo: $(STAMP)
	$(BIN)/mace_transfer_train --pipeline configs/demo_pbe_si_to_ge.yaml

# the Stillinger-Weber toy (a Si model trained here first, then Si -> Ge on SW data)
demo-sw: $(STAMP)
	$(BIN)/mace_transfer_train --pipeline configs/demo_si_to_ge.yaml

dft-setup:
	bash scripts/dft_setup.sh

# the peers' own environment (.venv-peers: SevenNet-0, CHGNet), never imported by the product (issue 22)
peers:
	bash scripts/peers_setup.sh

# the shipped PBE datasets, merged from the labellers' files (SW density + PBE density)
pbe-data: $(STAMP)
	$(BIN)/mace_transfer_assemble --force --out data/si_pbe.xyz data/si_pbe16.xyz data/si_pbe16_scaled.xyz $(wildcard data/si_pbe16_scaled_b.xyz)
	$(BIN)/mace_transfer_assemble --force --out data/ge_pbe.xyz data/ge_pbe16.xyz data/ge_pbe16_scaled.xyz
	$(BIN)/mace_transfer_assemble --force --out data/ge_test_pbe.xyz data/ge_test_pbe16.xyz data/ge_test_pbe16_scaled.xyz

clean:
	rm -rf runs/demo runs/demo_pbe
