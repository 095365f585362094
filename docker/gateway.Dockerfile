# The REST gateway: one static binary on an empty image.
# Built by scripts/build-images from the staging folder it prepares.
FROM scratch
COPY gateway /gateway
# glibc's resolver, linked in statically, reads this: /etc/hosts first, then
# DNS (Docker's embedded server knows `front-proxy`).
COPY nsswitch.conf /etc/nsswitch.conf
ENV GATEWAY_LISTEN=0.0.0.0:3000 \
    GATEWAY_UPSTREAM=http://front-proxy:8000
EXPOSE 3000
USER 65534:65534
# `gateway healthcheck` asks the gateway's own GET /healthz (its liveness; it
# does not call upstream, so the gateway is healthy before the proxy is).
HEALTHCHECK --interval=2s --timeout=2s --start-period=10s --retries=2 \
    CMD ["/gateway", "healthcheck", "--timeout", "1s"]
ENTRYPOINT ["/gateway"]
