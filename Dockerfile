# syntax=docker/dockerfile:1
# Multi-stage build: a static (musl) binary from the official Rust image, on distroless/static
# (CA certificates included, no shell), as the non-root user 65532.
#
#   docker build -t oauth-token-operator:0.1.0 .

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin oauth-token-operator \
 && cp target/x86_64-unknown-linux-musl/release/oauth-token-operator /oauth-token-operator

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
