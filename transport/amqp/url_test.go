package amqp

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in, url, vhost, mgmt string
		tls                  bool
	}{
		{in: "amqp://guest:guest@h:5672//", url: "amqp://guest:guest@h:5672/", vhost: "/"},
		{in: "amqp://guest:guest@h:5672/", url: "amqp://guest:guest@h:5672/", vhost: "/"},
		{in: "amqp://h", url: "amqp://h/", vhost: "/"},
		{in: "pyamqp://u:p@h/app", url: "amqp://u:p@h/", vhost: "app"},
		{in: "librabbitmq://u:p@h:1/a%2Fb", url: "amqp://u:p@h:1/", vhost: "a/b"},
		{in: "amqps://u:p@h/v", url: "amqp://u:p@h:5671/", vhost: "v", tls: true},
		{in: "amqps://u:p@h:9999/v", url: "amqp://u:p@h:9999/", vhost: "v", tls: true},
		{in: "amqp://u:p@h//?management=15672", url: "amqp://u:p@h/", vhost: "/", mgmt: "http://u:p@h:15672"},
		{in: "amqp://h//?management=15672", url: "amqp://h/", vhost: "/", mgmt: "http://guest:guest@h:15672"},
		{in: "amqp://u:p@h//?management=https%3A%2F%2Fm%3A443%2Fapi-root%2F", url: "amqp://u:p@h/", vhost: "/", mgmt: "https://u:p@m:443/api-root"},
		{in: "amqp://u:p@h//?management=http://a:b@m:1&heartbeat=5", url: "amqp://u:p@h/?heartbeat=5", vhost: "/", mgmt: "http://a:b@m:1"},
	} {
		e, err := parseURL(tc.in)
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.url, e.url, tc.in)
		assert.Equal(t, tc.vhost, e.vhost, tc.in)
		assert.Equal(t, tc.mgmt, e.management, tc.in)
		assert.Equal(t, tc.tls, e.tls, tc.in)
		assert.NotContains(t, e.redacted, ":p@", tc.in)
	}
	for _, bad := range []string{"redis://h/0", "amqp://u:secret@h//?management=ftp://m", "amqp://u:secret@h:notaport/", "::"} {
		_, err := parseURL(bad)
		require.Error(t, err, bad)
		assert.NotContains(t, err.Error(), "secret", bad)
	}
}

func TestRedactURL(t *testing.T) {
	assert.Equal(t, "amqp://u:xxxxx@h/", redact("amqp://u:secret@h/"))
	assert.NotContains(t, redact("amqp://u:p@h//?management=http://a:secret@m:1"), "secret")
	assert.NotContains(t, redact("amqp:/u:secret@h"), "secret")
}
