package health_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/health"
	"github.com/gopidbox/pidbox/transport/memory"
)

// A node's health served over HTTP, as a Kubernetes probe would query it.
func ExampleHandler() {
	tr := memory.New(memory.Options{})
	defer tr.Close()
	mb, _ := pidbox.New(tr, pidbox.Options{})
	defer mb.Close()
	node := mb.NewNode("w1@host", pidbox.NodeOptions{})

	srv := httptest.NewServer(health.Handler(node))
	defer srv.Close()
	probe := func() {
		resp, err := srv.Client().Get(srv.URL + "/healthz")
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		var rep health.Report
		_ = json.NewDecoder(resp.Body).Decode(&rep)
		fmt.Println(resp.StatusCode, "healthy:", rep.Healthy)
	}

	probe() // not serving yet

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = node.Serve(ctx) }()
	<-node.Ready()
	probe()

	cancel()
	<-done
	probe() // stopped
	// Output:
	// 503 healthy: false
	// 200 healthy: true
	// 503 healthy: false
}
