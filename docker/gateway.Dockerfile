# The REST gateway: one static binary on an empty image.
# Built by scripts/build-images from the staging folder it prepares.
FROM scratch
# OCI labels; scripts/build-images passes the version (the workspace's) and
# the source repository.
ARG VERSION=0.0.0
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="grpc-balance/gateway" \
      org.opencontainers.image.description="The REST gateway of grpc-balance: GET /alive calls gateway.AliveService through the proxy" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.source="$SOURCE" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY gateway /gateway
# glibc's resolver, linked in statically, reads this: /etc/hosts first, then
# DNS (Docker's embedded server knows `front-proxy`).
COPY nsswitch.conf /etc/nsswitch.conf
ENV GATEWAY_LISTEN=0.0.0.0:3000 \
    GATEWAY_UPSTREAM=http://front-proxy:8000
EXPOSE 3000
# A numeric user (scratch has no passwd file to name one): not root, and the
# same uid wherever the image runs (Compose, Swarm, Kubernetes). The ports are
# above 1024, so no capability is needed to bind them.
USER 65532:65532
# `gateway healthcheck` asks the gateway's own GET /healthz (its liveness; it
# does not call upstream, so the gateway is healthy before the proxy is).
HEALTHCHECK --interval=2s --timeout=2s --start-period=10s --retries=2 \
    CMD ["/gateway", "healthcheck", "--timeout", "1s"]
ENTRYPOINT ["/gateway"]
