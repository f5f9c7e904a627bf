//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package celery

// rusage is "N/A" where there is no getrusage, as in Celery.
func rusage() any { return "N/A" }

func rss() (int64, bool) { return 0, false }

func kernelRelease() string { return "" }

func loadavg() []float64 { return []float64{0, 0, 0} }
