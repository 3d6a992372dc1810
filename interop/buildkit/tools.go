//go:build tools

// Package tools pins BuildKit's two commands. BuildKit's own go.mod has exclude lines, so
// `go install github.com/moby/buildkit/cmd/buildkitd@vX` refuses it; requiring it from this
// module and `go build`ing the command packages works (scripts/install-buildkit.sh).
package tools

import (
	_ "github.com/moby/buildkit/cmd/buildctl"
	_ "github.com/moby/buildkit/cmd/buildkitd"
)
