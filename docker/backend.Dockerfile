# The gRPC backend: one static binary on an empty image.
# Built by scripts/build-images from the staging folder it prepares.
FROM scratch
COPY backend /backend
ENV BACKEND_LISTEN=0.0.0.0:8080
EXPOSE 8080
USER 65534:65534
# The backend's own gRPC health check (grpc.health.v1.Health/Check): healthy
# while SERVING, unhealthy once it turns NOT_SERVING to drain.
HEALTHCHECK --interval=2s --timeout=2s --start-period=10s --retries=2 \
    CMD ["/backend", "healthcheck", "--addr", "127.0.0.1:8080"]
ENTRYPOINT ["/backend"]
