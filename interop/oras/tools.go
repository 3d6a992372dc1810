//go:build tools

// Package tools pins the oras command (oras.land/oras v1.3.6), the client that pulls the
// ModelPack twin in tests/modelpack.rs. `go build oras.land/oras/cmd/oras` from this module
// (scripts/install-interop.sh) builds exactly the pinned version, with go.sum as the pin.
package tools

import (
	_ "oras.land/oras/cmd/oras"
)
