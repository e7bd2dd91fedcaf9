# syntax=docker/dockerfile:1
# The Wukong operator image: the `wukong` binary and the bundled plugin components.
#   docker build -t wukong:0.1.0 .
# Runs as 65532 (distroless `nonroot`); needs only a writable /var/cache/wukong (the
# compiled-code cache, an emptyDir in deploy/deployment.yaml) and the config at /etc/wukong.

FROM rust:1.95-bookworm AS build
# tests/build-plugins.sh lists the plugin crates with python3.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target/ between builds; the artifacts are copied out
# of target/ in the same step because the mount is not part of the image. The sandbox
# tests' misbehaving plugin (hostile_plugin.wasm) is not a backend and is left out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    set -eux; \
    cargo build --locked --release -p wukong; \
    bash tests/build-plugins.sh; \
    mkdir -p /out/plugins; \
    cp target/release/wukong /out/wukong; \
    cp target/wasm32-wasip2/plugin/*.wasm /out/plugins/; \
    rm -f /out/plugins/hostile_plugin.wasm; \
    mkdir -p /out/cache

# glibc and libgcc, nothing else: no shell, no package manager. User 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/wukong /usr/local/bin/wukong
COPY --from=build /out/plugins/ /usr/lib/wukong/plugins/
COPY deploy/wukong.toml /etc/wukong/wukong.toml
# Writable for `docker run` without a volume; in the cluster an emptyDir is mounted here.
COPY --from=build --chown=65532:65532 /out/cache /var/cache/wukong
ENV WUKONG_CACHE=/var/cache/wukong
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/wukong"]
CMD ["run", "--config", "/etc/wukong/wukong.toml"]
