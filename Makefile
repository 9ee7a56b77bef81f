# derivd: `make localnet` runs a local 4-validator chain, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: localnet test lint typecheck unit mutation clean prometheus evm-node

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# 4 validators on 127.0.0.1 (node i: p2p 26656+10i, RPC 26657+10i, metrics 26660+10i), created in
# ./.localnet on first use; `derivd localnet --validators 1` runs a single-node chain instead.
# `make localnet EVM_RPC=http://127.0.0.1:8545` (after `make evm-node`) also deploys the bridge there.
localnet: $(STAMP)
	$(BIN)/derivd localnet --home ./.localnet $(if $(EVM_RPC),--evm-rpc $(EVM_RPC))

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# CosmJS for tests/node/test_cosmjs.py, from the lock file (Node.js and the npm registry)
COSMJS := tests/cosmjs/node_modules/.package-lock.json
$(COSMJS): tests/cosmjs/package-lock.json
	npm ci --prefix tests/cosmjs --no-audit --no-fund --loglevel=error
	touch $(COSMJS)

# Prometheus and promtool for tests/node/test_prometheus.py: Debian's package, fetched without root
# (`apt-get download`) and unpacked into the venv (statically linked Go binaries).
PROM_DIR := $(VENV)/prometheus
PROMETHEUS := $(PROM_DIR)/usr/bin/prometheus
$(PROMETHEUS): $(STAMP)
	rm -rf $(PROM_DIR) $(PROM_DIR).download && mkdir -p $(PROM_DIR).download
	cd $(PROM_DIR).download && apt-get download prometheus || { echo "error: could not fetch Debian's prometheus package with apt-get download (run apt-get update as root, or apt-get install prometheus and set DERIVD_PROMETHEUS=/usr/bin/prometheus)" >&2; exit 1; }
	dpkg-deb -x $(PROM_DIR).download/prometheus_*.deb $(PROM_DIR)
	rm -rf $(PROM_DIR).download
	$(PROMETHEUS) --version | head -1

prometheus: $(PROMETHEUS)

# Solidity compiler and the local EVM (Hardhat) for the bridge (evm/, tests/evm), from the lock file
EVM := evm/node_modules/.package-lock.json
$(EVM): evm/package-lock.json
	npm ci --prefix evm --no-audit --no-fund --loglevel=error
	touch $(EVM)

# A local EVM chain (Hardhat's network, chain id 31337, a block a second) on 127.0.0.1:8545 for
# `make localnet EVM_RPC=http://127.0.0.1:8545`
evm-node: $(EVM)
	cd evm && DERIVD_EVM_BLOCK_MS=1000 ./node_modules/.bin/hardhat node --hostname 127.0.0.1 --port 8545

unit: $(STAMP) $(COSMJS) $(EVM) $(if $(DERIVD_PROMETHEUS),,$(PROMETHEUS))
	$(BIN)/pytest -q

test: lint typecheck unit

# Mutation testing of the consensus core (long: tens of minutes on 2 cores); see tests/mutation.
mutation: $(STAMP)
	$(BIN)/python -m tests.mutation consensus/machine.py consensus/votes.py consensus/rules.py

clean:
	rm -rf $(VENV) .localnet .pytest_cache .mypy_cache .ruff_cache .hypothesis
