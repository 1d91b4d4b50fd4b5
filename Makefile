# Ember: the two commands are `make run` (boot the default guest) and `make test` (everything).
# Both set up what they need on a fresh Debian machine: the Rust toolchain comes with the
# machine; resources/build-guest.sh installs its tools with apt-get and builds the guest from
# Debian packages into build/guest.

CARGO     ?= cargo
GUEST_DIR ?= build/guest
EMBER     := target/release/ember
# Extra flags for `make run`, e.g. EMBER_ARGS="--accel kvm --log-level info".
EMBER_ARGS ?=

.PHONY: build guest run test lint clean

build:
	$(CARGO) build --release --workspace --bins

guest:
	resources/build-guest.sh $(GUEST_DIR)

run: build guest
	@status=0; $(EMBER) --no-api --config-file $(GUEST_DIR)/vm.json $(EMBER_ARGS) || status=$$?; \
	if [ $$status -eq 4 ]; then \
	  echo "make run: the VM failed (report above). If this host's KVM cannot run the guest," \
	       "boot it on Ember's software CPU: make run EMBER_ARGS='--accel interp'" >&2; \
	fi; exit $$status

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Tests list what they skip, or accept as a limit of this host, in $(SKIPS) (the test
# harness hides what passing tests print); it is shown at the end, pass or fail.
SKIPS := target/test-skips.txt

test: build guest lint
	@rm -f $(SKIPS)
	@status=0; $(CARGO) test --workspace --release --no-fail-fast || status=$$?; \
	if [ -s $(SKIPS) ]; then \
	  echo; echo "== skipped, or accepted as a limit of this host =="; sort $(SKIPS); \
	else \
	  echo; echo "== no test skipped anything =="; \
	fi; exit $$status

clean:
	$(CARGO) clean
	rm -rf build
