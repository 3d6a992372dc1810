// cri-pull: ImageService.PullImage over a CRI socket, the call a kubelet makes to pull
// a pod's image (what `crictl pull` does; Debian has no cri-tools package). Prints the
// image reference the runtime answers with.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	endpoint := flag.String("endpoint", "/run/containerd/containerd.sock", "the CRI runtime's unix socket")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long the pull may take")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: cri-pull [--endpoint SOCKET] IMAGE")
		os.Exit(2)
	}
	if err := pull(*endpoint, flag.Arg(0), *timeout); err != nil {
		fmt.Fprintf(os.Stderr, "cri-pull: %v\n", err)
		os.Exit(1)
	}
}

func pull(endpoint, image string, timeout time.Duration) error {
	conn, err := grpc.NewClient("unix://"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := runtimeapi.NewImageServiceClient(conn).PullImage(ctx, &runtimeapi.PullImageRequest{
		Image: &runtimeapi.ImageSpec{Image: image},
	})
	if err != nil {
		return fmt.Errorf("PullImage %s: %w", image, err)
	}
	fmt.Println(resp.ImageRef)
	return nil
}
