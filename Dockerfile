# syntax=docker/dockerfile:1
# The Wukong operator image: the `wukong` binary and the bundled plugin components.
#   docker build -t wukong:0.1.0 .
# Runs as 65532 (distroless `nonroot`); needs only a writable /var/cache/wukong (the
# compiled-code cache, an emptyDir in deploy/deployment.yaml) and the config at /etc/wukong.

FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
# The bundled plugins are the ones deploy/wukong.toml names. Each is built on its own, as
# tests/build-plugins.sh does (a component serves one step: the SDK's step features must not
# unify); that script also builds test and example plugins and the Python one (which needs
# componentize-py), none of which belong in the image.
ARG PLUGINS="multus-network cdi-storage longhorn-storage ceph-rbd-storage kubevirt-lifecycle kubevirt-migration"
# Cache mounts keep the registry and target/ between builds; the artifacts are copied out
# of target/ in the same step because the mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    set -eux; \
    cargo build --locked --release -p wukong; \
    mkdir -p /out/plugins /out/cache; \
    cp target/release/wukong /out/wukong; \
    for plugin in $PLUGINS; do \
      cargo build --locked --target wasm32-wasip2 --profile plugin -p "$plugin"; \
      cp "target/wasm32-wasip2/plugin/$(echo "$plugin" | tr - _).wasm" /out/plugins/; \
    done

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
