// containerd-stargz-grpc: the stargz snapshotter's gRPC service, for containerd's
// proxy_plugins. The upstream command (github.com/containerd/stargz-snapshotter/cmd) is
// a module the Go proxy does not serve, so this is the part of it the tests need: the
// snapshotter from the library's service package behind containerd's snapshot API on a
// unix socket, configured from a JSON file with the fields of service.Config (the same
// names as the upstream TOML: noprefetch, no_background_fetch, blob.chunk_size, ...).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/log"
	"github.com/containerd/stargz-snapshotter/service"
	"google.golang.org/grpc"
)

func main() {
	address := flag.String("address", "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock", "unix socket to serve the snapshot API on")
	root := flag.String("root", "/var/lib/containerd-stargz-grpc", "the snapshotter's state directory")
	configPath := flag.String("config", "", "JSON file holding a service.Config (optional)")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	flag.Parse()
	if err := run(*address, *root, *configPath, *logLevel); err != nil {
		fmt.Fprintf(os.Stderr, "containerd-stargz-grpc: %v\n", err)
		os.Exit(1)
	}
}

func run(address, root, configPath, logLevel string) error {
	if err := log.SetLevel(logLevel); err != nil {
		return err
	}
	var cfg service.Config
	if configPath != "" {
		b, err := os.ReadFile(configPath)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			return fmt.Errorf("%s: %w", configPath, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// overlayfs is what the snapshotter stacks its FUSE-mounted layers with.
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	if err := service.Supported(root); err != nil {
		return fmt.Errorf("snapshotter not supported here: %w", err)
	}
	sn, err := service.NewStargzSnapshotterService(ctx, root, &cfg)
	if err != nil {
		return err
	}
	defer sn.Close()

	rpc := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(sn))
	if err := os.MkdirAll(filepath.Dir(address), 0o700); err != nil {
		return err
	}
	if err := os.RemoveAll(address); err != nil {
		return err
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return err
	}
	// SIGTERM/SIGINT: stop serving, then Close unmounts the layers (deferred above).
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		rpc.GracefulStop()
	}()
	log.G(ctx).WithField("address", address).Info("serving the stargz snapshotter")
	return rpc.Serve(l)
}
