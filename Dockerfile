# syntax=docker/dockerfile:1
# Multi-stage build: a static (musl) binary from the official Rust image, on distroless/static
# (CA certificates included, no shell), as the non-root user 65532.
#
#   docker build -t oauth-token-operator:0.1.0 .

# Base images are pinned by digest where the published digest of the tag can be cited:
# rust:1.97-bookworm (Rust 1.97.1) is the image index digest that docker-library/repo-info
# publishes for that tag (repos/rust/remote/1.97-bookworm.md, commit 0afc2e650567). To update,
# take the new digest from that file (or `docker buildx imagetools inspect rust:1.97-bookworm`).
FROM docker.io/library/rust:1.97-bookworm@sha256:593db038d36ea0d2e5b22a2e095eb95dbec607d88d658c2f35f65ee880b4f93a AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
# The manifest declares the benchmarks as targets: cargo reads their paths even to build the
# binary alone, so benches/ is part of the build context (tests/packaging.rs builds this context).
COPY Cargo.toml Cargo.lock ./
# The allocator's build-time options (see Cargo.toml).
COPY .cargo ./.cargo
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin oauth-token-operator \
 && cp target/x86_64-unknown-linux-musl/release/oauth-token-operator /oauth-token-operator

# gcr.io/distroless publishes no digest list that could be cited here, so this stays a tag; pin it
# with `crane digest gcr.io/distroless/static-debian12:nonroot` when building releases.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="oauth-token-operator" \
      org.opencontainers.image.description="Keeps OAuth2 client-credentials tokens fresh in Kubernetes Secrets" \
      org.opencontainers.image.source="https://github.com/oauth-token-operator/oauth-token-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /oauth-token-operator /oauth-token-operator
USER 65532:65532
ENTRYPOINT ["/oauth-token-operator"]
CMD ["run"]
