# syntax=docker/dockerfile:1
# The tool as a container image: a static (musl) binary on scratch.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY src src
COPY benches benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gitlab-docker-autodep \
    && cp target/release/gitlab-docker-autodep /gitlab-docker-autodep

FROM alpine:3.22 AS certs
RUN apk add --no-cache ca-certificates

FROM scratch
COPY --from=certs /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
COPY --from=build /gitlab-docker-autodep /usr/local/bin/gitlab-docker-autodep
USER 65534:65534
EXPOSE 14001
ENTRYPOINT ["/usr/local/bin/gitlab-docker-autodep"]
CMD ["--help"]
