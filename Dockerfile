# syntax=docker/dockerfile:1
# The hookgate image: built from this checkout with the same cargo flags as
# the test suite (tests/it/deploy.rs checks that they agree), run as uid 10001.
#
#   docker build -t hookgate:dev .
#   docker run --rm hookgate:dev --help

# Not older than Cargo.toml's rust-version (also checked by tests/it/deploy.rs).
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# librdkafka is compiled from source by rdkafka-sys (with OpenSSL, zlib, zstd).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
# Cargo.toml names these targets; the manifest must find them.
COPY tests tests
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bin hookgate \
 && install -D -m 0755 target/release/hookgate /out/hookgate

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 hookgate \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin hookgate
COPY --from=build /out/hookgate /usr/local/bin/hookgate
# Numeric, so that Kubernetes can check runAsNonRoot.
USER 10001:10001
WORKDIR /tmp
ENV HOOKGATE_LISTEN=0.0.0.0:8080 \
    HOOKGATE_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["hookgate"]
CMD ["--help"]
