# ovnkube — build, test, install.
#   make demo   the whole system on an embedded local sandbox (arrives with the sandbox work)
#   make test   deps (when missing), lint, unit and integration tests on real OVN/OVS

CARGO   ?= cargo
DESTDIR ?=
PREFIX  ?= /usr
CNI_BIN ?= /opt/cni/bin

DEB_PACKAGES = ovn-central ovn-host openvswitch-switch iproute2 ethtool iputils-ping netcat-openbsd python3 util-linux

.PHONY: all build release test unit integration lint fmt deps install demo bench clean

all: build

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --release --bins -p ovnkube

# Installs the Debian packages the tests and the daemon need, only when something is missing.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v kubectl >/dev/null 2>&1 || { \
	  echo "installing kubectl"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl || \
	  echo "warning: kubectl could not be installed; the kubectl tests will fail and say so"; }

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# One build profile for everything (dev); integration tests need root (network namespaces).
test: deps lint
	$(CARGO) test --workspace --no-fail-fast

unit:
	$(CARGO) test --workspace --lib --bins

install: release
	install -D -m 0755 target/release/ovnkube $(DESTDIR)$(PREFIX)/bin/ovnkube
	install -d $(DESTDIR)$(CNI_BIN)
	ln -sf $(PREFIX)/bin/ovnkube $(DESTDIR)$(CNI_BIN)/ovn-k8s-cni-overlay

demo:
	@echo "make demo arrives with the sandbox work (issue 9); see README.md" >&2
	@exit 2

clean:
	$(CARGO) clean
