// Package client holds calgate's Go stubs, generated at build time from
// proto/calgate/v1/calgate.proto into gen/ (never committed):
//
//	go generate ./...   # needs buf on PATH, or BUF=/path/to/buf
//
// See cmd/quickstart for a caller.
package client

//go:generate sh generate.sh
