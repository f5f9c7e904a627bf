// Package health serves a pidbox node's health over HTTP, so that
// Kubernetes (or any prober) can check a Go worker without touching the
// broker: whether the node serves, whether its broker subscription is live,
// when the broker last answered it, and its handler backlog.
//
//	http.Handle("/healthz", health.Handler(node))
//	go http.ListenAndServe("127.0.0.1:8081", nil)
//
// It lives outside the root package so that programs that do not serve
// HTTP do not link net/http.
package health

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/gopidbox/pidbox"
)

// Report is the JSON body Handler writes.
type Report struct {
	pidbox.NodeHealth
	// Healthy is NodeHealth.Healthy: serving, with a live subscription.
	Healthy bool `json:"healthy"`
	// SecondsSinceSeen is the age of LastSeen; -1 when unknown.
	SecondsSinceSeen float64 `json:"seconds_since_seen"`
}

// Handler answers every request with the node's Report: status 200 when
// the node is healthy, 503 when it is not serving or its subscription is
// down (the broker restarted, the connection died, re-subscribing).
func Handler(n *pidbox.Node) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := n.Health()
		r := Report{NodeHealth: h, Healthy: h.Healthy(), SecondsSinceSeen: -1}
		if !h.LastSeen.IsZero() {
			r.SecondsSinceSeen = time.Since(h.LastSeen).Seconds()
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if !r.Healthy {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(r)
	})
}
