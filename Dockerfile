# The rds-fence image: one binary (controller, webhook, node, rds-sim)
# plus the node tools the node plugin runs on the host's devices:
# nvme-cli (diagnostics; the plugin connects through /dev/nvme-fabrics
# itself), e2fsprogs and xfsprogs (mkfs, fsck, resize), util-linux (blkid,
# mount, umount, losetup) and dmsetup (the stable device-mapper device).
# The controller and the webhook run it as user 65532 (see manifests/).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/rds-fence ./cmd/rds-fence

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      nvme-cli e2fsprogs xfsprogs util-linux mount dmsetup kmod ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/rds-fence /usr/local/bin/rds-fence
ENTRYPOINT ["/usr/local/bin/rds-fence"]
