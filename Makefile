# libvirt-tunnel workspace: front door.  See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help
S := scripts

.PHONY: help deps source tree build stock series check check-series check-faults check-asan \
        unit-tests lab-tests nova-tests deb deb-trixie check-trixie guest demo bench profile \
        clean distclean

help:
	@echo "make deps          install Debian packages (build + lab), idempotent"
	@echo "make tree          build/libvirt = pristine v11.3.0 + patches/"
	@echo "make build         build and install the patched tree into build/install"
	@echo "make stock         build pristine v11.3.0 into build/install-stock (lab's stock peer)"
	@echo "make series        export build/libvirt commits since v11.3.0 to patches/"
	@echo "make check         deps, build, libvirt test suite, project tests (what CI runs)"
	@echo "make check-series  every patch in order builds and passes the unit tests (FROM=N: from patch N)"
	@echo "make check-faults  the lab's heavy fault cases, which make check leaves out"
	@echo "make check-asan    the patched daemons built with ASan and UBSan, every lab case against them"
	@echo "make nova-tests    patches/nova/ on Debian's python3-nova, and its unit tests"
	@echo "make deb           Debian packages (build/debs/) that install over Debian's libvirt 11.3.0"
	@echo "make deb-trixie    the same for Debian 13 (build/debs-trixie/), built in a trixie root"
	@echo "make check-trixie  a Debian 13 lab host upgraded to make deb-trixie's, headline migration both ways"
	@echo "make demo          the headline migration between two lab hosts"
	@echo "make bench         tunnelled vs native migration benchmark"
	@echo "make profile       the benchmark with perf on every daemon (docs/performance.md)"

deps:
	@$(S)/deps.sh

source:
	@$(S)/fetch-source.sh

tree: source
	@$(S)/tree.sh

build: tree
	@$(S)/build.sh

stock: tree
	@$(S)/build.sh --stock

series:
	@$(S)/export-series.sh

guest:
	@lab/guest/build-guest.sh

check:
	@$(S)/check.sh

check-series: tree
	@$(S)/check-series.sh

unit-tests:
	@$(S)/run-tests.sh --unit-only

lab-tests:
	@$(S)/run-tests.sh --lab-only

deb:
	@$(S)/deps.sh && $(MAKE) --no-print-directory tree && $(S)/deb.sh

# its own tree (orig tarball + Debian's patches + patches/), not build/libvirt
deb-trixie:
	@$(S)/deps.sh && $(S)/deb.sh trixie

# not in make check: a trixie root and a build in it take too long for CI
check-trixie:
	@$(S)/deps.sh && $(MAKE) --no-print-directory build guest deb-trixie && \
	    $(S)/debian-root.sh trixie lab "$$(cat build/debs-trixie/debian-base)" > /dev/null && \
	    $(S)/run-tests.sh --lab-trixie

nova-tests:
	@$(S)/deps.sh && $(S)/nova-tests.sh

# not in make check: a sanitized build, then the whole lab matrix against it
check-asan:
	@$(S)/deps.sh && $(MAKE) --no-print-directory build stock guest && \
	    $(S)/build.sh --asan && $(S)/run-tests.sh --lab-asan

check-faults:
	@$(S)/deps.sh && $(MAKE) --no-print-directory build stock guest && $(S)/run-tests.sh --lab-heavy

demo:
	@$(S)/deps.sh && $(MAKE) --no-print-directory build stock guest && lab/demo.py

bench:
	@$(S)/deps.sh && $(MAKE) --no-print-directory build guest && bench/bench.py

# one run of each throughput mode with perf attached to every daemon
profile:
	@$(S)/deps.sh && $(MAKE) --no-print-directory build guest && \
	    BENCH_PROFILE=1 BENCH_RUNS=$${BENCH_RUNS:-1} \
	    BENCH_GUEST_MIB=$${BENCH_GUEST_MIB:-2048} BENCH_WL_MIB=$${BENCH_WL_MIB:-1024} \
	    BENCH_MODES=$${BENCH_MODES:-native-tcp,tunnel-tcp,native-tls,tunnel-tls} bench/bench.py

clean:
	rm -rf build/obj build/obj-stock build/obj-deb build/obj-asan build/install build/install-stock build/install-asan build/deb build/debs build/lab build/guest build/nova-test \
	    build/deb-trixie build/debs-trixie

distclean:
	rm -rf build
