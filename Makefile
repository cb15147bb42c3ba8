# storagectl: build, test and demo on Debian 12 as root.
#   make demo    set up, build, bring the lab up, run storagectl in it, tear it down
#   make check   set up, build, run every test (unit, integration, fuzz, packages, lab)
#   make fuzz    the fuzz targets alone (FUZZ_SECONDS=600 make fuzz for a longer run)
#   make deb     Debian packages in .build/deb (docs/install.md)
SHELL := /bin/bash
SWIFT ?= swift
BIN_DIR := $(CURDIR)/.build/debug
LAB := Tests/Lab/lab
PREFIX ?= /usr/local

# Every Debian package the build, the tests and the lab need.
DEBIAN_PACKAGES := pkg-config libsystemd-dev libvirt-dev libnfs-dev libnfs-utils libxml2-dev libxxhash-dev \
	systemd iproute2 util-linux python3 python3-xxhash openssl \
	libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients \
	qemu-system-x86 qemu-block-extra qemu-utils \
	nfs-ganesha nfs-ganesha-vfs rpcbind nfs-kernel-server \
	cockpit-ws cockpit-bridge cockpit-system chromium chromium-driver \
	debhelper debootstrap lintian \
	ceph-mon ceph-mgr ceph-osd ceph-mds ceph-common nfs-ganesha-ceph ceph-fuse keepalived

.PHONY: setup build check deb fuzz test lab-test demo bench bench-agents lab-up lab-down lab-shell lab-status install clean

## setup: install the Debian packages (only when one is missing; needs root)
setup:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "setup: installing $$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "setup: every Debian package is installed"; fi
	@command -v $(SWIFT) >/dev/null || { echo "setup: Swift 6 is needed on PATH (swift.org toolchain for Debian 12)"; exit 1; }

## build: debug build of the three executables and the tests
build: setup
	$(SWIFT) build --build-tests

## check: every test: unit and integration (swift test, one test at a time, ~90 s: in
## parallel on two cores the tests with timing in them were starved, e.g. the post-copy
## switch and the privileged-port test), the fuzz targets for FUZZ_SECONDS each
## (Tests/Fuzz/run: 60 s when CI=true, else 10 s; docs/fuzzing.md), the Debian packages
## (Tests/Packaging/run: built from the debug tree, installed into a clean Debian 12
## root cached in /var/cache/storagectl-deb-test, then purged), then the lab (with its
## Ceph profile: a Ceph host and two NFS gateways beside the VFS hosts, docs/storage.md)
check: build
	$(SWIFT) test --skip-build --disable-xctest --no-parallel
	SWIFT=$(SWIFT) Tests/Fuzz/run
	SWIFT=$(SWIFT) Tests/Packaging/run
	LAB_STORAGE=ceph LAB_BIN_DIR=$(BIN_DIR) Tests/Lab/run-tests

test: check

## deb: the Debian packages (debian/), into .build/deb: release build; with
## DEB_BUILD_OPTIONS=noopt the debug tree of `make build` (what make check tests).
## The Cockpit plugin's package only when cockpit/ exists.
DEB_DIR := $(CURDIR)/.build/deb
deb: setup
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)
	SWIFT=$(SWIFT) STORAGECTL_DEB_DIR=$(DEB_DIR) dpkg-buildpackage -us -uc -b \
		$(if $(wildcard cockpit/.),,-Ppkg.storagectl.nocockpit) \
		--buildinfo-file=$(DEB_DIR)/storagectl.buildinfo --buildinfo-option=-u$(DEB_DIR) \
		--changes-file=$(DEB_DIR)/storagectl.changes --changes-option=-u$(DEB_DIR)

## fuzz: build the fuzz targets with libFuzzer (.build-fuzz) and run each for FUZZ_SECONDS
fuzz: setup
	SWIFT=$(SWIFT) Tests/Fuzz/run

## demo: the main job: a lab of three hosts where storagectl really runs
demo: build
	LAB_BIN_DIR=$(BIN_DIR) Tests/Lab/demo

## bench: copy-engine, share, check and agent benchmarks in the lab (results: docs/benchmarks.md)
bench: setup
	$(SWIFT) build -c release
	COPY_BENCH_BIN=$(CURDIR)/.build/release/storagectl-copy-bench BENCH_JSON=$(CURDIR)/.build/bench-copy.json Tests/Lab/bench-copy
	LAB_BIN_DIR=$(CURDIR)/.build/release BENCH_JSON=$(CURDIR)/.build/bench-share.json Tests/Lab/bench-share
	LAB_BIN_DIR=$(CURDIR)/.build/release BENCH_JSON=$(CURDIR)/.build/bench-check.json Tests/Lab/bench-check
	LAB_BIN_DIR=$(CURDIR)/.build/release BENCH_JSON=$(CURDIR)/.build/bench-agents.json Tests/Lab/bench-agents

## bench-agents: only the agents' request handling, RSS and EXPORT at scale
bench-agents: setup
	$(SWIFT) build -c release
	LAB_BIN_DIR=$(CURDIR)/.build/release BENCH_JSON=$(CURDIR)/.build/bench-agents.json Tests/Lab/bench-agents

## lab-up / lab-down / lab-shell HOST=source-example / lab-status: the lab by hand
lab-up: build
	LAB_BIN_DIR=$(BIN_DIR) $(LAB) up
lab-down:
	$(LAB) down
lab-shell:
	$(LAB) shell $(or $(HOST),source-example)
lab-status:
	$(LAB) status

## install: release binaries to $(PREFIX)/sbin, units to /etc/systemd/system, docs, and
## the Cockpit page to /usr/share/cockpit/storagectl (Cockpit's package directory)
install: setup
	$(SWIFT) build -c release
	install -D -m 0755 .build/release/storagectl $(DESTDIR)$(PREFIX)/sbin/storagectl
	install -D -m 0755 .build/release/storage-agent $(DESTDIR)$(PREFIX)/sbin/storage-agent
	install -D -m 0755 .build/release/compute-agent $(DESTDIR)$(PREFIX)/sbin/compute-agent
	install -D -m 0755 .build/release/storagectl-migration-hook $(DESTDIR)$(PREFIX)/sbin/storagectl-migration-hook
	install -D -m 0644 -t $(DESTDIR)/etc/systemd/system units/*.socket units/*.service
	@# What the storage agent may write, from its configuration (docs/install.md, "Units")
	install -d -m 0755 $(DESTDIR)/etc/systemd/system/storage-agent.service.d
	.build/release/storage-agent --print-unit-drop-in \
		> $(DESTDIR)/etc/systemd/system/storage-agent.service.d/50-paths.conf
	install -D -m 0644 -t $(DESTDIR)$(PREFIX)/share/doc/storagectl docs/*.md
	install -D -m 0644 -t $(DESTDIR)/usr/share/cockpit/storagectl cockpit/manifest.json cockpit/*.html cockpit/*.js cockpit/*.css

clean:
	$(LAB) down >/dev/null 2>&1 || true
	rm -rf .build .build-fuzz
