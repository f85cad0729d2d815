# syntax=docker/dockerfile:1
# calgate container image: a release build on the official Rust image, run on
# distroless (glibc, CA certificates, no shell) as the non-root user 10001 that
# the Helm chart's securityContext expects. protoc comes from the
# protoc-bin-vendored crate, so the build stage needs no system packages.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits reuse the cached dependency layer.
# The workspace names the fake Cronofy's crate, so its manifest must be
# present; the production build leaves out the `sandbox` feature, so nothing
# of the fake is compiled into the image.
COPY Cargo.toml Cargo.lock build.rs ./
COPY crates/fake-cronofy/Cargo.toml crates/fake-cronofy/Cargo.toml
COPY proto proto
RUN mkdir -p src crates/fake-cronofy/src && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && echo '' > crates/fake-cronofy/src/lib.rs \
    && cargo build --release --locked --no-default-features --bin calgate \
    && rm -rf src
COPY migrations migrations
COPY src src
# Make sure cargo rebuilds the crate itself, not the placeholder above.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --no-default-features --bin calgate

FROM gcr.io/distroless/cc-debian12
COPY --from=build /src/target/release/calgate /usr/local/bin/calgate
USER 10001:10001
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/calgate"]
CMD ["serve", "--config", "/etc/calgate/calgate.toml"]
