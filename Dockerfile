# syntax=docker/dockerfile:1
# auth0-default-roles: a release build on rust:1-bookworm, run as a non-root user on
# debian:bookworm-slim.
#
#   docker build -t auth0-default-roles .
#   docker run --rm -v $PWD/my.toml:/etc/auth0-default-roles/config.toml:ro \
#     -e AUTH0_CLIENT_SECRET -p 9464:9464 auth0-default-roles
#
# librdkafka is compiled from source by the rdkafka crate (its configure script: make, gcc, perl,
# all in rust:1-bookworm; no cmake) and links Debian's OpenSSL and zlib (libssl-dev, zlib1g-dev,
# pkg-config: installed below; the runtime image has their shared libraries, so TLS security
# updates come with Debian's). SQLite is compiled in (bundled).

FROM rust:1-bookworm AS build
WORKDIR /src
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
# Every workspace member: the service (the root: Cargo.toml, src, the benches its manifest
# names, the config it embeds) and crates/ (the simulator behind `demo` and `sim`).
COPY Cargo.toml Cargo.lock ./
# The build scripts' environment (CFLAGS for librdkafka).
COPY .cargo .cargo
COPY src src
COPY benches benches
COPY config config
COPY crates crates
# The cache mounts keep the crates.io downloads and the compiled dependencies between builds;
# the binary is copied out of the cached target directory before the layer ends.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin auth0-default-roles \
    && cp target/release/auth0-default-roles /usr/local/bin/auth0-default-roles

FROM debian:bookworm-slim
# libssl3 and zlib1g: the shared libraries librdkafka links (TLS and compression to brokers;
# zlib1g is in the slim image already); ca-certificates: TLS to the Auth0 tenant and to brokers;
# curl: the HEALTHCHECK below (the binary has no health-probe command, and curl costs a few MB in
# a slim image).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 zlib1g ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin app
COPY --from=build /usr/local/bin/auth0-default-roles /usr/local/bin/auth0-default-roles
# Every key documented, for reference; mount your own file as config.toml.
COPY config/example.toml /etc/auth0-default-roles/example.toml
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# /metrics, /healthz, /readyz ([metrics] listen, default 0.0.0.0:9464).
EXPOSE 9464
# Liveness only: /readyz also reports a Management API outage, which a restart cannot fix.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:9464/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/auth0-default-roles"]
CMD ["run", "--config", "/etc/auth0-default-roles/config.toml"]
