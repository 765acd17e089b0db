# syntax=docker/dockerfile:1
# Arbiter's image: slim, non-root, the gRPC code generated at build time.
#
#   docker build -t arbiter:0.1.0 .
#   docker run --rm -e REDIS_URL=redis://host:6379/0 -p 127.0.0.1:50051:50051 arbiter:0.1.0
#
# The service listens on 0.0.0.0 inside the container, which it refuses to do without TLS
# and API keys (ARBITER_TLS_CERT_FILE, ARBITER_TLS_KEY_FILE, ARBITER_API_KEYS_FILE) unless
# ARBITER_INSECURE=true says the network around it is trusted (deploy/compose.yaml for a
# laptop; a service mesh's mTLS in deploy/k8s).

FROM python:3.11-slim AS build
WORKDIR /src
# The same code generator pins as the Makefile's.
RUN pip install --no-cache-dir "grpcio-tools>=1.85,<1.86"
COPY pyproject.toml README.md ./
COPY protos protos
COPY common common
COPY feature_store feature_store
COPY engine engine
COPY training training
RUN python -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. \
        protos/arbiter/v1/*.proto \
    && touch arbiter/__init__.py arbiter/v1/__init__.py \
    && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# LightGBM's OpenMP runtime; nothing else beyond the Python wheels.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /home/arbiter arbiter \
    && mkdir -p /var/lib/arbiter \
    && chown arbiter:arbiter /var/lib/arbiter
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
WORKDIR /home/arbiter
ENV PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    ARBITER_DATA_DIR=/var/lib/arbiter \
    ARBITER_HOST=0.0.0.0
VOLUME ["/var/lib/arbiter"]
# gRPC, Prometheus /metrics
EXPOSE 50051 9464
ENTRYPOINT ["arbiter"]
CMD ["serve"]
