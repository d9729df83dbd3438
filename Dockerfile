# syntax=docker/dockerfile:1
# The one DSR Mesh image: every Deployment runs this `dsr` binary with its own
# arguments (`serve <service>`, `migrate`, `up`).
#
# The build step is the release build CI runs (.ci/run runs every
# `RUN cargo …` line of this file, verbatim): code generation needs no
# protoc (protox), SQLite is compiled in, TLS is rustls.

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY services services
COPY proto proto
COPY tests tests
# The source revision the binary reports (dsr_build_info{revision}):
# docker build --build-arg DSR_BUILD_REVISION=$(git rev-parse --short HEAD) .
ARG DSR_BUILD_REVISION=unknown
RUN cargo build --release --locked -p dsr-cli --bin dsr

# glibc and libgcc only, no shell, no package manager; user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/dsr /usr/local/bin/dsr
USER 65532:65532
# gRPC, and the plain ops port: gRPC health for the kubelet's probes and
# /metrics for Prometheus.
EXPOSE 50051 8081
ENTRYPOINT ["/usr/local/bin/dsr"]
CMD ["--help"]
