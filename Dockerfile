# syntax=docker/dockerfile:1
# Multi-stage build: dependencies are compiled in their own layer (cached until Cargo.toml
# or Cargo.lock change), sources after. The runtime image is Debian slim with a non-root user.

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Dependency layer: a placeholder crate with the real manifest.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src config \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && touch config/default.toml config/prompt.txt .env.example \
 && cargo build --release --locked \
 && rm -rf src
COPY config ./config
COPY .env.example ./
COPY src ./src
# CI (scripts/check-dockerfile.sh) builds with exactly the flags of this line.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin dreamcore-relay

FROM debian:bookworm-slim AS runtime
# Set to true for an image that can run USE_MODAL=false (local Claude Code CLI).
ARG WITH_CLAUDE_CLI=false
ARG CLAUDE_CLI_VERSION=2.1.328
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git \
 && if [ "$WITH_CLAUDE_CLI" = "true" ]; then \
      apt-get install -y --no-install-recommends nodejs npm \
      && npm install -g "@anthropic-ai/claude-code@${CLAUDE_CLI_VERSION}" \
      && npm cache clean --force; \
    fi \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --uid 10001 relay \
 && mkdir -p /data && chown relay:relay /data
COPY --from=build /src/target/release/dreamcore-relay /usr/local/bin/dreamcore-relay
COPY --from=build /src/config /app/config
WORKDIR /app
USER 10001:10001
ENV HOST=0.0.0.0 PORT=3000 DATA_DIR=/data LOG_FORMAT=json
EXPOSE 3000
VOLUME ["/data"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["dreamcore-relay", "healthcheck"]
ENTRYPOINT ["dreamcore-relay"]
CMD ["serve"]
