package kombudiff_test

import (
	"context"
	"log/slog"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/gopidbox/pidbox/internal/kombudiff"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
)

// TestRedis runs the differential suite against Kombu on a real
// redis-server: Kombu's fleet in database 1, Go's in database 2.
func TestRedis(t *testing.T) {
	redistest.RequirePython(t, "kombu", "msgpack", "redis")
	srv := redistest.Start(t)
	srv.AllowNoTTL("_kombu.") // Kombu's binding sets
	quiet := slog.New(slog.DiscardHandler)
	kombudiff.Run(t, kombudiff.Broker{
		Name:     "redis",
		KombuURL: [2]string{srv.URL(1), srv.URL(2)},
		GoURL:    [2]string{srv.URL(1), srv.URL(2)},
		Open: func(ctx context.Context, url string) (transport.Transport, error) {
			return pidredis.Open(ctx, url, pidredis.Options{Logger: quiet})
		},
		Tap: func(ctx context.Context) (kombudiff.Tap, error) {
			return kombudiff.NewRedisTap(ctx, srv.Addr(), [2]int{1, 2})
		},
		Controller: buildController(t),
	})
}

// buildController builds examples/controller for the suite.
func buildController(t *testing.T) string {
	t.Helper()
	controller := filepath.Join(t.TempDir(), "controller")
	if out, err := exec.Command("go", "build", "-o", controller, "github.com/gopidbox/pidbox/examples/controller").CombinedOutput(); err != nil {
		t.Fatalf("build the controller: %v\n%s", err, out)
	}
	return controller
}
