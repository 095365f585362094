# The balancing proxy: one static binary on an empty image, with the compose
# configuration baked in as a default (compose mounts the current file over it).
# Built by scripts/build-images from the staging folder it prepares.
FROM scratch
# OCI labels; scripts/build-images passes the version (the workspace's) and
# the source repository.
ARG VERSION=0.0.0
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="grpc-balance/proxy" \
      org.opencontainers.image.description="The HTTP/2-aware balancing proxy of grpc-balance: every gRPC call to its own backend, found by DNS" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.source="$SOURCE" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY proxy /proxy
COPY front-proxy.yaml /etc/proxy/proxy.yaml
# glibc's resolver, linked in statically, reads this: /etc/hosts first, then
# DNS (Docker's embedded server answers the alias `backend` with every replica).
COPY nsswitch.conf /etc/nsswitch.conf
# Read by the server and by `proxy healthcheck` alike, so both agree on the
# admin address: mount another configuration here rather than elsewhere.
ENV PROXY_CONFIG=/etc/proxy/proxy.yaml
EXPOSE 8000 8001
# A numeric user (scratch has no passwd file to name one): not root, and the
# same uid wherever the image runs (Compose, Swarm, Kubernetes). The ports are
# above 1024, so no capability is needed to bind them.
USER 65532:65532
# `proxy healthcheck` asks the admin /ready: 200 LIVE while the proxy serves,
# 503 once it drains.
HEALTHCHECK --interval=2s --timeout=2s --start-period=10s --retries=2 \
    CMD ["/proxy", "healthcheck", "--timeout", "1s"]
ENTRYPOINT ["/proxy"]
