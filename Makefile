# rds-fence: run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

BIN        := $(CURDIR)/bin
GO         ?= go
GOFLAGS    ?=
# Fuzz budgets are execution counts, not durations: a duration budget on
# Go 1.26 can end in a spurious "context deadline exceeded" failure when a
# worker is busy at the deadline (golang/go#75804, fixed in Go 1.27).
FUZZTIME   ?= 60000x
BENCHTIME  ?= 3x
CREATE_BENCH_ARGS ?=
STATICCHECK_VERSION := v0.8.2
CONTROL_PLANE := $(BIN)/kube-apiserver $(BIN)/etcd
# The local environment (make run) and its end-to-end test also need these.
LOCAL_CLUSTER := $(BIN)/kube-controller-manager $(BIN)/kube-scheduler $(BIN)/csi-provisioner $(BIN)/csi-attacher

export PATH := /usr/local/go/bin:$(PATH)
export KUBEBUILDER_ASSETS := $(BIN)

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Targets:\n"} /^[a-zA-Z0-9_.-]+:.*##/ {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/rds-fence (controller, rds-sim, ... subcommands).
	$(GO) build $(GOFLAGS) -o $(BIN)/rds-fence ./cmd/rds-fence

.PHONY: control-plane
control-plane: $(CONTROL_PLANE) ## Build kube-apiserver and etcd from the Go module proxy into bin/ (once; cached).

$(BIN)/kube-apiserver:
	hack/build-control-plane.sh $(BIN) kube-apiserver

$(BIN)/etcd:
	hack/build-control-plane.sh $(BIN) etcd

.PHONY: local-cluster
local-cluster: $(CONTROL_PLANE) $(LOCAL_CLUSTER) ## Also build kube-controller-manager, kube-scheduler, csi-provisioner and csi-attacher (once; cached).

$(LOCAL_CLUSTER):
	hack/build-control-plane.sh $(BIN) $(notdir $@)

# Node tools the node tests use for real (loop devices, mkfs, mounts).
NODE_TOOLS := losetup blkid mkfs.ext4 mkfs.xfs xfs_growfs resize2fs mount

.PHONY: host-tools
host-tools: ## Install the node tools the tests run for real (apt, when missing; needs root).
	@missing=""; for t in $(NODE_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then echo ">> installing node tools (missing:$$missing)"; \
	  apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends util-linux mount e2fsprogs xfsprogs >/dev/null; fi

VM := $(BIN)/vm/vmlinuz $(BIN)/vm/base.cpio.gz

.PHONY: vm
vm: $(VM) ## Build the qemu guest (Debian kernel + initramfs with nvmet and nvme-tcp) into bin/vm (once; cached).

$(VM): hack/vm/build.sh
	hack/vm/build.sh $(BIN)/vm

.PHONY: test
test: control-plane local-cluster build host-tools vm ## Unit, simulator-over-SSH, csi-sanity and envtest suites (race detector), then short fuzzing of the parsers and the admission webhook.
	$(GO) test $(GOFLAGS) -race -timeout 20m ./...
	$(GO) test $(GOFLAGS) -run '^$$' -fuzz '^FuzzParseDetail$$' -fuzztime $(FUZZTIME) ./rds
	$(GO) test $(GOFLAGS) -run '^$$' -fuzz '^FuzzParseSize$$' -fuzztime 30000x ./rds
	$(GO) test $(GOFLAGS) -run '^$$' -fuzz '^FuzzAdmissionReview$$' -fuzztime 20000x ./webhook
	$(GO) test $(GOFLAGS) -run '^$$' -fuzz '^FuzzDecide$$' -fuzztime 20000x ./webhook

.PHONY: bench
bench: control-plane local-cluster build ## Benchmarks behind docs/PERFORMANCE.md. CREATE_BENCH_ARGS='-bench-sessions=4 -bench-latency=200ms -bench-requests=100'
	$(GO) test $(GOFLAGS) -run '^$$' -bench . -benchmem -benchtime 20x ./rds
	$(GO) test $(GOFLAGS) -run '^$$' -bench . -benchtime $(BENCHTIME) ./csi -args $(CREATE_BENCH_ARGS)
	$(GO) test $(GOFLAGS) -run '^$$' -bench ControllerPublish -benchtime 300x ./test/fencing
	$(GO) test $(GOFLAGS) -run '^$$' -bench Rebuild10000 -benchtime 1x -timeout 20m ./test/fencing
	$(GO) test $(GOFLAGS) -run '^$$' -bench NodeLoss -benchtime 20x -timeout 20m ./test/fencing
	$(GO) test $(GOFLAGS) -run '^$$' -bench Decision10k -benchtime 5000x -timeout 20m ./test/admission
	$(GO) test $(GOFLAGS) -run '^$$' -bench PodCreationOverhead -benchtime 1x ./test/admission
	$(GO) test $(GOFLAGS) -run '^$$' -bench LocalEnvironment -benchtime 2x -timeout 20m ./test/e2e

$(BIN)/staticcheck:
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: lint
lint: $(BIN)/staticcheck ## gofmt, go vet and staticcheck.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(BIN)/staticcheck ./...

# make run STORY=1 also plays the fencing story once the environment is up.
RUN_ARGS ?= $(if $(STORY),--story,)

.PHONY: run
run: local-cluster build host-tools ## Run the whole system locally until Ctrl-C (STORY=1: play the fencing story too; needs root).
	$(BIN)/rds-fence dev --dir $(CURDIR)/.run --bin $(BIN) --root $(CURDIR) $(RUN_ARGS)

.PHONY: demo
demo: local-cluster build host-tools ## Start the local environment, play the fencing story, print it, stop.
	$(BIN)/rds-fence dev --dir $(CURDIR)/.run --bin $(BIN) --root $(CURDIR) --story --exit-after-story

.PHONY: clean
clean: ## Remove build outputs except the cached control plane.
	rm -f $(BIN)/rds-fence
