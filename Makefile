# iterfs: `sudo make mount` and `sudo make test` are all a fresh Debian machine needs.
MOUNTPOINT ?= /mnt/iters
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the build, the mount and the tests need
DEBS := clang llvm bpftool libbpf1 libbpf-dev libfuse3-dev fuse3 pkg-config iproute2

.PHONY: setup debs venv bpf mount umount test bench clean man

setup: debs venv bpf

# Installs only what is missing, so a second run does nothing.
debs:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "make setup: missing Debian packages ($$missing); run it as root" >&2; exit 1; fi; \
		echo "installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || \
			{ echo "make setup: apt-get could not install $$missing" >&2; exit 1; }; \
	fi

$(BIN)/iterfs: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { echo "make setup: $(PYTHON) cannot create a virtual environment (python3-venv)" >&2; exit 1; }
	@$(BIN)/pip install -q --disable-pip-version-check -e '.[test]' || { echo "make setup: pip could not install iterfs and its dependencies" >&2; exit 1; }
	@touch $@

venv: $(BIN)/iterfs

bpf:
	@$(MAKE) -s -C bpf

mount: setup
	@mkdir -p $(MOUNTPOINT)
	$(BIN)/iterfs mount $(MOUNTPOINT)

umount:
	$(BIN)/iterfs umount $(MOUNTPOINT)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/bench.py

clean:
	@$(MAKE) -s -C bpf clean
	rm -rf $(VENV) build dist *.egg-info

# iterfs(8): its TARGETS section is generated from the target READMEs
man: man/iterfs.8

man/iterfs.8: man/iterfs.8.rst man/targets.py $(wildcard iterfs/readmes/*) | venv
	@$(BIN)/python man/targets.py --write
	@$(BIN)/python -c "import sys; from docutils.core import publish_string; sys.stdout.buffer.write(publish_string(open('$<').read(), writer='manpage'))" > $@
