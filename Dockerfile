# syntax=docker/dockerfile:1
# The tool as container images, from one static (musl) binary:
#
#   docker build -t gitlab-docker-autodep .                   # Alpine, with a shell:
#                                                             #   GitLab CI job image and server
#   docker build --target minimal -t gitlab-docker-autodep:minimal .   # scratch: server only
#
# Both run as an unprivileged user (65534), keep state in the volume
# /var/lib/gitlab-docker-autodep, listen on 0.0.0.0:14001 inside the
# container, and check their own health with `gitlab-docker-autodep
# healthcheck` (no curl needed).
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
# The state directory, owned by the user the images run as.
RUN mkdir -p /state/var/lib/gitlab-docker-autodep \
    && chown -R 65534:65534 /state/var/lib/gitlab-docker-autodep \
    && chmod 0700 /state/var/lib/gitlab-docker-autodep

FROM alpine:3.22 AS certs
RUN apk add --no-cache ca-certificates

# Server only: nothing but the binary and the CA certificates.
FROM scratch AS minimal
COPY --from=certs /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
COPY --from=build /gitlab-docker-autodep /usr/local/bin/gitlab-docker-autodep
COPY --from=build /state/ /
ENV AUTODEP_HOST=0.0.0.0 \
    AUTODEP_PORT=14001 \
    AUTODEP_STATE_DIR=/var/lib/gitlab-docker-autodep
USER 65534:65534
VOLUME ["/var/lib/gitlab-docker-autodep"]
EXPOSE 14001
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["/usr/local/bin/gitlab-docker-autodep", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/gitlab-docker-autodep"]
CMD ["server"]

# The default: Alpine with a shell, so GitLab CI can run it as a job image
# (no ENTRYPOINT to override); `docker run` starts the server.
FROM alpine:3.22 AS alpine
RUN apk add --no-cache ca-certificates
COPY --from=build /gitlab-docker-autodep /usr/local/bin/gitlab-docker-autodep
COPY --from=build /state/ /
ENV AUTODEP_HOST=0.0.0.0 \
    AUTODEP_PORT=14001 \
    AUTODEP_STATE_DIR=/var/lib/gitlab-docker-autodep
USER 65534:65534
VOLUME ["/var/lib/gitlab-docker-autodep"]
EXPOSE 14001
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["gitlab-docker-autodep", "healthcheck"]
CMD ["gitlab-docker-autodep", "server"]
