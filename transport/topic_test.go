package transport_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/transport"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var topicCases = []struct {
	binding, key string
	want         bool
}{
	{"worker.heartbeat", "worker.heartbeat", true},
	{"worker.heartbeat", "worker.online", false},
	{"worker.*", "worker.online", true},
	{"*.online", "worker.online", true},
	{"*.online", "online", false},
	{"#", "worker.heartbeat", true},
	{"#", "", true},
	{"worker.#", "worker.heartbeat", true},
	{"task.#", "worker.heartbeat", false},
	{"a.b", "aXb", false}, // "." is literal
	{"a+b.c", "a+b.c", true},
	{"a+b.c", "aab.c", false},
	// Kombu's corners, where it differs from an AMQP broker.
	{"worker.*", "worker.a.b", true},
	{"worker.#", "worker", false},
	{"worker.*", "worker.", false},
}

func TestTopicMatch(t *testing.T) {
	for _, c := range topicCases {
		assert.Equal(t, c.want, transport.TopicMatch(c.binding, c.key), "%q ~ %q", c.binding, c.key)
	}
}

// Kombu itself decides the same way, and stores the same pattern.
func TestTopicMatchAgreesWithKombu(t *testing.T) {
	redistest.RequirePython(t, "kombu")
	var script strings.Builder
	script.WriteString("from kombu.transport.virtual.exchange import TopicExchange\nx = TopicExchange(None)\n")
	for _, c := range topicCases {
		script.WriteString("p = x.key_to_pattern(" + pyStr(c.binding) + ")\n")
		script.WriteString("print(p + '\\t' + str(bool(x._match(p, " + pyStr(c.key) + "))))\n")
	}
	out, err := exec.Command(redistest.Python, "-c", script.String()).CombinedOutput()
	require.NoError(t, err, "%s", out)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, len(topicCases))
	for i, c := range topicCases {
		pattern, match, _ := strings.Cut(lines[i], "\t")
		assert.Equal(t, pattern, transport.TopicPattern(c.binding), "pattern of %q", c.binding)
		assert.Equal(t, match == "True", transport.TopicMatch(c.binding, c.key), "%q ~ %q", c.binding, c.key)
	}
}

func pyStr(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`) + "'"
}
