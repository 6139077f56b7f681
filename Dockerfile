# syntax=docker/dockerfile:1
#
# The flowgate image: `docker build -t registry.example.com/flowgate:0.1.0 .`
#
# Stages:
#   build             the pinned Rust toolchain (Cargo.toml rust-version) builds
#                     `flowgate` in release mode, by default WITHOUT the
#                     `emulator` feature (FEATURES=emulator for the dev image)
#   runtime-layout    distroless/cc (glibc, libgcc, CA certificates, tzdata,
#                     user 65532): the user, entrypoint, config path and labels
#   runtime-prebuilt  runtime-layout + a flowgate binary from the build context
#                     (scripts/deploy/check.sh: an image from the binary the
#                     test run built, on a machine that cannot pull images)
#   runtime           runtime-layout + the binary of `build` (the default target)
#
# The root filesystem is never written: run with readOnlyRootFilesystem (the
# manifests in deploy/ do) and mount the config at /etc/flowgate/.

ARG RUST_VERSION=1.88
ARG RUST_IMAGE=docker.io/library/rust:${RUST_VERSION}-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# "" (production: no emulator) or "emulator" (the dev overlay's image).
ARG FEATURES=""
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --no-default-features ${FEATURES:+--features "$FEATURES"} --bin flowgate \
    && install -D -m 0555 target/release/flowgate /out/flowgate

FROM ${RUNTIME_IMAGE} AS runtime-layout
ARG VERSION=0.1.0
ARG REVISION=unknown
# The repository URL (docker build --build-arg SOURCE=https://…).
ARG SOURCE=""
ARG FEATURES=""
LABEL org.opencontainers.image.title="flowgate" \
      org.opencontainers.image.description="gRPC gateway in front of hosted AI-workflow vendors (Fetch Hive, AI Tutor, Knouds)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.flowgate.features="${FEATURES}"
ENV PATH=/usr/local/bin:/usr/bin:/bin
# distroless "nonroot": uid/gid 65532. Numeric, so runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /
# gRPC, admin (/metrics), webhook ingress.
EXPOSE 50051 9464 8080
ENTRYPOINT ["flowgate"]
CMD ["serve", "--config", "/etc/flowgate/flowgate.toml"]

FROM runtime-layout AS runtime-prebuilt
COPY --chmod=0555 flowgate /usr/local/bin/flowgate

FROM runtime-layout AS runtime
COPY --from=build /out/flowgate /usr/local/bin/flowgate
