// Package api will hold SMILE's public surface: the protobuf schema and its
// generated code (the wire format between nodes and clients), the Go client
// and the HTTP gateway. Nothing lives here yet: the processor issue adds the
// single-node HTTP API; today the `smile` binary calls the model packages
// directly.
package api
