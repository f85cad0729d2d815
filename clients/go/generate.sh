#!/bin/sh
# Generates the calgate.v1 Go stubs into gen/ (run by `go generate ./...`).
# buf compiles the proto (no protoc needed); BUF names its binary if it is not
# on PATH. The plugins are the module's pinned tools, run through `go tool`.
set -eu
cd "$(dirname "$0")"
exec "${BUF:-buf}" generate ../.. --template buf.gen.yaml --path ../../proto/calgate
