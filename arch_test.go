package pidbox_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The rooms of the house and the arrows between them that must never
// exist (docs/ARCHITECTURE.md). Dependencies are transitive: a forbidden
// package reached through another is as wrong as a direct import.
func TestForbiddenImports(t *testing.T) {
	const mod = "github.com/gopidbox/pidbox"
	brokers := []string{mod + "/transport/memory", mod + "/transport/redis", mod + "/transport/amqp", mod + "/internal/redistest", mod + "/internal/rabbittest"}
	extensions := []string{mod + "/security", mod + "/celery", mod + "/otel", mod + "/health",
		"go.opentelemetry.io/otel", "go.opentelemetry.io/otel/trace", "go.opentelemetry.io/otel/metric", "go.opentelemetry.io/otel/attribute"}
	rules := []struct {
		pkg    string // a package, or a prefix ending in "/..."
		banned []string
		why    string
	}{
		{mod + "/transport/...", []string{mod}, "a transport never imports the root package"},
		{mod, append(brokers, extensions...), "the root never imports a concrete broker or an extension"},
		{mod + "/reply", append([]string{mod, mod + "/transport"}, brokers...), "reply never imports a broker"},
		{mod + "/clock", []string{mod}, "clock stands alone"},
		{mod + "/internal/wire", []string{mod, mod + "/transport"}, "the envelope codec knows no broker"},
		{mod + "/otel", []string{"go.opentelemetry.io/otel/sdk", "go.opentelemetry.io/otel/sdk/trace", "go.opentelemetry.io/otel/sdk/metric"}, "otel uses the OpenTelemetry API alone; programs bring the SDK"},
	}

	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Deps " "}}`, "./...").Output()
	require.NoError(t, err)
	deps := map[string]map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		deps[f[0]] = map[string]bool{}
		for _, d := range f[1:] {
			deps[f[0]][d] = true
		}
	}
	require.Contains(t, deps, mod, "go list saw the module")
	for _, r := range rules {
		checked := 0
		for pkg, ds := range deps {
			if prefix, ok := strings.CutSuffix(r.pkg, "/..."); ok {
				if !strings.HasPrefix(pkg, prefix+"/") {
					continue
				}
			} else if pkg != r.pkg {
				continue
			}
			checked++
			for _, b := range r.banned {
				if ds[b] {
					t.Errorf("%s imports %s: %s", pkg, b, r.why)
				}
			}
		}
		require.Positive(t, checked, "rule for %s matched no package", r.pkg)
	}
}
