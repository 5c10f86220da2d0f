# guildkey: multi-stage build, small non-root runtime image.
# docker build -t guildkey . && docker run --env-file .env -p 8080:8080 -v guildkey-data:/data guildkey

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Dependencies first, cached while only the sources change.
# The other workspace members (test double, bench harness) are never built
# here, but cargo reads their manifests, so they stay as stubs.
COPY Cargo.toml Cargo.lock ./
COPY tests/discord-double/Cargo.toml tests/discord-double/Cargo.toml
COPY bench/refs/Cargo.toml bench/refs/Cargo.toml
RUN mkdir -p src tests/discord-double/src bench/refs/src \
    && for f in src/main.rs tests/discord-double/src/main.rs bench/refs/src/main.rs; do echo 'fn main() {}' > "$f"; done \
    && touch src/lib.rs tests/discord-double/src/lib.rs \
    && cargo build --release --locked -p guildkey \
    && rm -rf src
COPY migrations migrations
COPY assets assets
COPY src src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked -p guildkey

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 guildkey \
    && useradd --system --uid 10001 --gid 10001 --home /data guildkey \
    && mkdir -p /data && chown guildkey /data
COPY --from=build /src/target/release/guildkey /usr/local/bin/guildkey
# Numeric, so Kubernetes' runAsNonRoot can check it (the guildkey user above).
USER 10001:10001
WORKDIR /data
VOLUME /data
ENV DATABASE_URL=sqlite:///data/guildkey.db?mode=rwc \
    GUILDKEY_HTTP_BIND=0.0.0.0:8080 \
    GUILDKEY_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["guildkey"]
CMD ["run"]
