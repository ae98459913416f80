# tamalloc: `make help` lists the targets.
#
# The kernel is built in $(TAMALLOC_BUILD_DIR) (default ~/.cache/tamalloc),
# outside the work tree, so clones and CI runs share one build.

PYTHON      ?= python3
VENV        ?= .venv
VPY         := $(VENV)/bin/python
MODULE_DIR  := $(CURDIR)/kernel/modules/system_stats
CMD         ?= uname -a
TAMALLOC_BUILD_DIR ?= $(HOME)/.cache/tamalloc

export TAMALLOC_BUILD_DIR

.DEFAULT_GOAL := help
.PHONY: help deps venv lint host-test kernel module vm-run vm-test series-check \
	test bench bench-vm clean stress fresh-test vm-oom-test

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
		awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

deps: ## install the Debian packages the build, the VM and the tests need (root)
	@bash vm/install-deps.sh

fresh-test: ## the README's commands in a new minimal Debian 12 root (root, about 1 h)
	$(PYTHON) vm/fresh_test.py

# A stamp of its own: a .venv made by the README's first command has no test tools.
$(VENV)/.test-tools: pyproject.toml setup.py src/tamalloc/_mapping.c \
		$(wildcard src/tamalloc/backends/_procscan_c/*.[ch]) \
		$(wildcard src/tamalloc/backends/_bpf/*.[ch])
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.test-tools ## create .venv with the package (editable) and the test tools

lint: venv ## ruff on all Python code, mypy --strict on the package
	$(VENV)/bin/ruff check src tests bench examples vm
	$(VENV)/bin/ruff format --check src tests bench examples vm
	$(VENV)/bin/mypy

host-test: venv ## the test suite on this machine's kernel (procfs backend)
	$(VPY) -m pytest -q -rs tests

kernel: deps ## build the patched debug kernel (incremental)
	$(PYTHON) vm/kernel.py

module: deps ## build the kernel and the system_stats module against it
	$(PYTHON) vm/kernel.py --module $(MODULE_DIR)

vm-run: module ## run CMD='...' as root in the guest, in this work tree
	$(PYTHON) vm/run.py '$(CMD)'

# The whole suite takes about 15 minutes in an emulated guest on an idle 2-core host;
# other guests on the same host can triple that.
VM_TEST_TIMEOUT ?= 3600
vm-test: module venv ## boot the guest, run selftests + pytest inside, check the kernel log
	$(PYTHON) vm/run.py --check-log --timeout $(VM_TEST_TIMEOUT) \
		'TAMALLOC_BUILD_DIR=$(TAMALLOC_BUILD_DIR) $(VPY) -m pytest -p no:cacheprovider -q -rs --durations=15 tests'

# The long form of tests/stress in one boot of its own: 1,000,000 fuzzed syscalls, a storm
# of 3,000 processes with the module loaded and unloaded, an OOM kill (whose report, and
# nothing else, --allow-oom accepts), the unprivileged probes.  A small guest: the OOM
# hog has less to fill.
STRESS_MEMORY ?= 2G
stress: module venv ## the robustness campaign on the debug kernel, full scale, in the guest
	VM_MEMORY=$(STRESS_MEMORY) $(PYTHON) vm/run.py --check-log --allow-oom --timeout 5400 \
		'TAMALLOC_BUILD_DIR=$(TAMALLOC_BUILD_DIR) TAMALLOC_STRESS=long /usr/bin/time -f "stress: %e s in the guest" $(VPY) -m pytest -p no:cacheprovider -q -rs -s --durations=15 tests/stress'

# tests/oom: real OOM kills (memory cgroups, oom.group, nested limits, one system-wide)
# checked against `tamalloc oom`'s prediction, in a boot of its own whose log check
# accepts complete OOM-killer reports (--allow-oom). A small guest, so that the
# system-wide OOM has little to fill: 1G leaves 819 MiB to the kernel's allocator after
# KASAN's shadow, and the memory cgroups need at most 160 MiB. About 4 minutes in the
# guest.
OOM_MEMORY ?= 1G
vm-oom-test: module venv ## real OOM kills in the guest against tamalloc oom's prediction
	VM_MEMORY=$(OOM_MEMORY) $(PYTHON) vm/run.py --check-log --allow-oom --timeout 1800 \
		'TAMALLOC_BUILD_DIR=$(TAMALLOC_BUILD_DIR) TAMALLOC_OOM_KILLS=1 $(VPY) -m pytest -p no:cacheprovider -q -rs -s tests/oom'

series-check: deps venv ## git am the series on a pristine tree and checkpatch --strict every patch
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PYTHON) vm/series_check.py

# deps first: on a fresh machine the README's test line is all a newcomer runs.
test: deps lint host-test series-check vm-test vm-oom-test ## everything CI runs

bench: venv ## start-up, procfs and allocation benchmarks on this machine
	$(VPY) bench/bench_startup.py
	$(VPY) bench/bench_procfs.py
	$(VPY) bench/bench_forecast.py

bench-vm: module venv ## kernel-backend benchmark inside the guest (1,000 and 10,000 processes)
	VM_MEMORY=8G $(PYTHON) vm/run.py '$(VPY) bench/bench_kernel.py --processes 1000 && $(VPY) bench/bench_kernel.py --processes 10000 --repeat 1'

clean: ## remove the venv and the module build (the kernel build stays)
	rm -rf $(VENV)
	$(MAKE) -C $(MODULE_DIR) clean KDIR=$(TAMALLOC_BUILD_DIR)/obj 2>/dev/null || true
