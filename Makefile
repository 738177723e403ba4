# ovnkube — build, test, install.
#   make build     debug build of every binary in the workspace
#   make release   release build of ovnkube (what `make install` installs)
#   make test      deps (when missing), lint, then every unit and integration test on real OVN/OVS
#   make unit      unit tests only (no root, no OVN)
#   make lint      shellcheck + `vagrant validate` on vagrant/, `cargo fmt --check`, clippy -D warnings
#   make demo      the whole system on an embedded local sandbox (needs root; KEEP=1 leaves it up)
#   make bench     release-profile benchmarks (pods, policies, services)
#   make fuzz      the property tests with 100,000 cases each (FUZZ_CASES); make test runs 1,000
#   make chaos     the fault suite (release build): master/NB/SB/northd/API faults under churn
#   make deps      install the Debian packages the daemon, the tests and lint need
#   make install   install what `make release` built (no build as root): binary, links, units,
#                  env files (kept if present), logrotate file, docs; honours DESTDIR and PREFIX

CARGO   ?= cargo
# Where cargo puts binaries (honours CARGO_TARGET_DIR, as cargo does).
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
DESTDIR ?=
PREFIX  ?= /usr
CNI_BIN ?= /opt/cni/bin

# What the daemon, the demo and the tests run; then what `lint` checks the vagrant files with.
RUNTIME_PACKAGES = ovn-central ovn-host openvswitch-switch iproute2 ethtool iputils-ping netcat-openbsd python3 util-linux logrotate systemd
# The metrics test parses /metrics with the Prometheus project's own OpenMetrics parser.
RUNTIME_PACKAGES += python3-prometheus-client
# The ssl tests make their certificates with ovs-pki.
RUNTIME_PACKAGES += openvswitch-pki
LINT_PACKAGES = shellcheck vagrant
DEMO_DIR ?= /tmp/ovnkube-demo

.PHONY: all build release test unit integration lint fmt deps deps-runtime apt-install install install-bin demo demo-stop bench clean vagrant-check fuzz chaos

all: build

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --release --bins -p ovnkube

# Installs the Debian packages the tests and the daemon need, only when something is missing.
deps: deps-runtime
	@$(MAKE) --no-print-directory apt-install PKGS="$(LINT_PACKAGES)"

deps-runtime:
	@$(MAKE) --no-print-directory apt-install PKGS="$(RUNTIME_PACKAGES)"
	@command -v kubectl >/dev/null 2>&1 || { \
	  echo "note: kubectl is missing and Debian 12 does not package it. The kubectl tests and the"; \
	  echo "demo need it: install it from the Kubernetes apt repository (pkgs.k8s.io, package"; \
	  echo "kubectl) or put the static kubectl binary from dl.k8s.io in /usr/local/bin."; }

apt-install:
	@missing=""; for p in $(PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

lint: vagrant-check
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The vagrant cluster cannot run here; check its scripts and Vagrantfile instead.
vagrant-check:
	shellcheck -x -P SCRIPTDIR vagrant/provisioning/*.sh
	cd vagrant && VAGRANT_DEFAULT_PROVIDER=libvirt vagrant validate --ignore-provider

fmt:
	$(CARGO) fmt --all

# One build profile for everything (dev); integration tests need root (network namespaces).
test: deps lint
	$(CARGO) test --workspace --no-fail-fast

unit:
	$(CARGO) test --workspace --lib --bins

SYSTEMD_DIR ?= /lib/systemd/system

# The binary, the CNI plugin link, systemd units (ExecStart pointing at $(PREFIX)/bin), the
# logrotate file and (only when absent) the environment files. It installs what `make release`
# built and never builds: `sudo make install` must not compile as root.
install: install-bin
	@for r in master node; do \
	  install -d $(DESTDIR)$(SYSTEMD_DIR); \
	  sed -e 's|/usr/bin/ovnkube|$(PREFIX)/bin/ovnkube|g' -e 's|/usr/share/doc/ovnkube|$(PREFIX)/share/doc/ovnkube|g' \
	    dist/ovnkube-$$r.service \
	    > $(DESTDIR)$(SYSTEMD_DIR)/ovnkube-$$r.service; \
	  chmod 0644 $(DESTDIR)$(SYSTEMD_DIR)/ovnkube-$$r.service; done
	install -D -m 0644 dist/ovnkube.logrotate $(DESTDIR)/etc/logrotate.d/ovnkube
	install -d -m 0750 $(DESTDIR)/etc/ovnkube
	@for r in master node; do \
	  f=$(DESTDIR)/etc/default/ovnkube-$$r; \
	  if [ -e $$f ]; then echo "keeping existing $$f"; \
	  else install -D -m 0644 dist/ovnkube-$$r.env $$f; fi; done
	install -D -m 0644 docs/ovnkube.md $(DESTDIR)$(PREFIX)/share/doc/ovnkube/ovnkube.md

# Only the binary and its links (CNI plugin, ovn-kube-util; what the vagrant provisioning uses
# after a host-side build).
install-bin:
	@test -x $(TARGET_DIR)/release/ovnkube || { \
	  echo "error: $(TARGET_DIR)/release/ovnkube is missing: run 'make release' as your user first, then 'sudo make install'" >&2; \
	  exit 1; }
	install -D -m 0755 $(TARGET_DIR)/release/ovnkube $(DESTDIR)$(PREFIX)/bin/ovnkube
	install -d $(DESTDIR)$(CNI_BIN)
	ln -sf $(PREFIX)/bin/ovnkube $(DESTDIR)$(CNI_BIN)/ovn-k8s-cni-overlay
	ln -sf ovnkube $(DESTDIR)$(PREFIX)/bin/ovn-kube-util

# Benchmarks, not tests; release profile (what users run). Pod controller: POD_BENCH_NODES (100)
# nodes, POD_BENCH_SIZES (2,000, 10,000 and 20,000) pods created at POD_BENCH_RATE (500) pods/s;
# prints create->annotation p50/p99, pods/s, the master's RSS, the load and the p99 growth, and
# writes each size's latency CDF to POD_BENCH_PLOTS (docs/bench/pod-latency-<n>.svg). The binary
# uses the native OVSDB backend; OVNKUBE_NB_BACKEND=exec measures the ovn-nbctl one instead.
# Policy benchmark: POLICY_BENCH_NS (100) namespaces x POLICY_BENCH_PODS (10) pods x 5 policies;
# prints the time to program NB, northd's time, ACL / port group / address set / logical flow
# counts and one pod's create->isolated latency at that scale.
# Services: SVC_BENCH_SERVICES (1,000) services x 10 endpoints from EndpointSlices; prints the
# time to program them, northd CPU, endpoint change -> VIP p50/p99 and a no-change master
# restart (sync time, NB writes); then OVN's own cost of the load-balancer layouts.
# Restart at scale: RESTART_BENCH_NODES (50) nodes, RESTART_BENCH_PODS (10,000) pods,
# RESTART_BENCH_SERVICES (1,000) services x 10 endpoints, RESTART_BENCH_POLICIES (500) policies;
# prints the NB transactions of a no-change restart and spawn -> new pod annotated.
# Master failover: HA_BENCH_TRIALS (5) kills of the leading master; prints kill -> next pod
# annotated for a standby taking over and for the master restarted in place.
# ssl: SSL_BENCH_PODS (1,000) pods at SSL_BENCH_RATE (100) pods/s on 10 nodes, the NB over
# ssl: next to tcp: (both native); prints create->annotation p50/p99 of each and their ratio.
# Raft: RAFT_BENCH_PODS (1,000) pods' create->annotation p50/p99 on a 3-member NB/SB cluster
# next to a standalone NB, then RAFT_BENCH_KILLS (5) times the gap from a kill -9 of the NB
# leader to the next pod annotated.
bench:
	$(CARGO) test --release -p ovnkube --test pods -- --ignored --nocapture bench_pod_annotation_latency
	$(CARGO) test --release -p ovnkube --test policy -- --ignored --nocapture bench_policy_programming
	$(CARGO) test --release -p ovnkube --test services_bench -- --ignored --nocapture --test-threads=1
	$(CARGO) test --release -p ovnkube --test ha -- --ignored --nocapture bench_master_failover
	$(CARGO) test --release -p ovnkube --test restart_bench -- --ignored --nocapture
	$(CARGO) test --release -p ovnkube --test ssl -- --ignored --nocapture --test-threads=1 bench_ssl_against_tcp
	$(CARGO) test --release -p ovnkube --test raft -- --ignored --nocapture bench_raft_pod_latency_and_failover_gap

# Property tests of every parser (INI file, Go flags, CIDR/hostLen, the ovn annotation, CNI
# config and results, OVSDB JSON, ctl values) with FUZZ_CASES cases each instead of the
# 1,000 `make test` runs; any panic or broken property fails.
FUZZ_CASES ?= 100000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test -p ovnkube --lib -- props::

# The fault suite (tests/chaos.rs, needs root): CHAOS_NODES (10) nodes under ~CHAOS_RATE (35)
# API changes/s; CHAOS_MASTER_KILLS (20), CHAOS_NB_RESTARTS (5), CHAOS_API_PAUSES (3, of
# CHAOS_API_PAUSE_SECS 30 s), CHAOS_SB_RESTARTS (2), CHAOS_NORTHD_RESTARTS (2), CHAOS_NODE_KILLS
# (3: a node agent killed during its init), CHAOS_NB_WIPES (4) trials; CHAOS_CONVERGE_SECS (120) per trial, CHAOS_SEED to replay a run. Prints the
# table (also written to CHAOS_REPORT); fails when a trial did not converge.
CHAOS_REPORT ?= $(TARGET_DIR)/chaos-report.md
chaos:
	CHAOS_REPORT=$(abspath $(CHAOS_REPORT)) $(CARGO) test --release -p ovnkube --test chaos -- --ignored --nocapture chaos_full

# The whole system on an embedded local sandbox (needs root). KEEP=1 leaves it running.
demo: deps-runtime build
ifeq ($(KEEP),1)
	@mkdir -p $(DEMO_DIR); rm -f $(DEMO_DIR)/READY
	@setsid nohup $(TARGET_DIR)/debug/ovnkube-demo --keep --state-dir $(DEMO_DIR) > $(DEMO_DIR).log 2>&1 & \
	for i in $$(seq 1 900); do \
	  if [ -e $(DEMO_DIR)/READY ]; then cat $(DEMO_DIR).log; exit 0; fi; \
	  if ! kill -0 $$! 2>/dev/null; then cat $(DEMO_DIR).log; exit 1; fi; \
	  sleep 0.2; done; cat $(DEMO_DIR).log; exit 1
else
	$(TARGET_DIR)/debug/ovnkube-demo --state-dir $(DEMO_DIR)
endif

demo-stop:
	$(TARGET_DIR)/debug/ovnkube-demo stop --state-dir $(DEMO_DIR)

clean:
	$(CARGO) clean
