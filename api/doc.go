// Package api is SMILE's public surface: the protobuf schema and its
// generated code (api/smilepb, the wire format between nodes and clients),
// the HTTP gateway over a node's service (Handler: models, inference,
// tenants, training and table-building jobs, PLOT tables) with its one
// table of stable error codes, and the Go client the CLI uses (Client).
// docs/api.md documents the routes.
package api
