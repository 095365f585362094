# The gRPC backend: one static binary on an empty image.
# Built by scripts/build-images from the staging folder it prepares.
FROM scratch
# OCI labels; scripts/build-images passes the version (the workspace's) and
# the source repository.
ARG VERSION=0.0.0
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="grpc-balance/backend" \
      org.opencontainers.image.description="The gRPC backend of grpc-balance: AliveService, Greeter, Echo, health and reflection, draining on SIGTERM" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.source="$SOURCE" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY backend /backend
ENV BACKEND_LISTEN=0.0.0.0:8080
EXPOSE 8080
# A numeric user (scratch has no passwd file to name one): not root, and the
# same uid wherever the image runs (Compose, Swarm, Kubernetes). The ports are
# above 1024, so no capability is needed to bind them.
USER 65532:65532
# The backend's own gRPC health check (grpc.health.v1.Health/Check): healthy
# while SERVING, unhealthy once it turns NOT_SERVING to drain.
HEALTHCHECK --interval=2s --timeout=2s --start-period=10s --retries=2 \
    CMD ["/backend", "healthcheck", "--addr", "127.0.0.1:8080"]
ENTRYPOINT ["/backend"]
