package kombudiff_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/gopidbox/pidbox/internal/kombudiff"
	"github.com/gopidbox/pidbox/internal/rabbittest"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/transport"
	pidamqp "github.com/gopidbox/pidbox/transport/amqp"
)

func TestMain(m *testing.M) { os.Exit(rabbittest.Main(m.Run)) }

// TestRabbitMQ runs the differential suite against Kombu on py-amqp on a
// real rabbitmq-server: Kombu's fleet in the vhost kd0, Go's in kd1, both
// traced by RabbitMQ's firehose.
func TestRabbitMQ(t *testing.T) {
	redistest.RequirePython(t, "kombu", "msgpack", "amqp")
	srv := rabbittest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var urls [2]string
	for i, vhost := range []string{"kd0", "kd1"} {
		u, err := srv.AddVhost(ctx, vhost, true)
		if err != nil {
			t.Fatal(err)
		}
		urls[i] = u
	}
	quiet := slog.New(slog.DiscardHandler)
	mgmt := "?management=" + srv.ManagementURL()
	kombudiff.Run(t, kombudiff.Broker{
		Name:     "rabbitmq",
		KombuURL: urls,
		GoURL:    [2]string{urls[0] + mgmt, urls[1] + mgmt},
		Open: func(ctx context.Context, url string) (transport.Transport, error) {
			return pidamqp.Open(ctx, url, pidamqp.Options{Logger: quiet})
		},
		Tap: func(ctx context.Context) (kombudiff.Tap, error) {
			return kombudiff.NewRabbitTap(ctx, urls)
		},
		Controller: buildController(t),
	})
}
