# iterfs: `sudo make mount` and `sudo make test` are all a fresh Debian machine needs.
MOUNTPOINT ?= /mnt/iters
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the build, the mount and the tests need
DEBS := clang llvm bpftool libbpf1 libbpf-dev libfuse3-dev fuse3 pkg-config iproute2 systemd

.PHONY: setup debs venv bpf mount umount test bench clean man install uninstall wheel

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
	rm -rf $(VENV) build dist *.egg-info $(MAN_PAGES)

# Man pages, from reStructuredText; iterfs(7)'s TARGETS section comes from the target READMEs.
MAN_PAGES := man/iterfs.8 man/iterfs.7 man/mount.iterfs.8
PREFIX ?= /usr/local
# mount(8) looks for /sbin/mount.<type> helpers there and nowhere else
SBINDIR ?= /sbin
MANDIR ?= $(PREFIX)/share/man

man: $(MAN_PAGES)

man/iterfs.7.rst: man/targets.py $(wildcard iterfs/readmes/*) | venv
	@$(BIN)/python man/targets.py --write

man/%: man/%.rst | venv
	@$(BIN)/python -c "import sys; from docutils.core import publish_string; sys.stdout.buffer.write(publish_string(open('$<').read(), writer='manpage'))" > $@

# iterfs runs from the checkout's virtual environment: the command is a link to it, and the
# mount helper's shebang becomes its python (by the venv path: python finds its venv from it).
install: setup man
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man7 $(DESTDIR)$(MANDIR)/man8
	ln -sfn $(CURDIR)/$(BIN)/iterfs $(DESTDIR)$(PREFIX)/bin/iterfs
	sed '1s|^#!.*|#!$(CURDIR)/$(BIN)/python|' mount_helpers/mount.fuse.iterfs > $(DESTDIR)$(SBINDIR)/mount.fuse.iterfs
	chmod 755 $(DESTDIR)$(SBINDIR)/mount.fuse.iterfs
	ln -sfn mount.fuse.iterfs $(DESTDIR)$(SBINDIR)/mount.iterfs
	install -m 644 man/iterfs.8 man/mount.iterfs.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 644 man/iterfs.7 $(DESTDIR)$(MANDIR)/man7/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/iterfs $(DESTDIR)$(SBINDIR)/mount.fuse.iterfs $(DESTDIR)$(SBINDIR)/mount.iterfs \
		$(DESTDIR)$(MANDIR)/man8/iterfs.8 $(DESTDIR)$(MANDIR)/man8/mount.iterfs.8 $(DESTDIR)$(MANDIR)/man7/iterfs.7

# A wheel with the compiled BPF objects inside (installing it needs no clang).
wheel: setup
	$(BIN)/python -m build --outdir dist
