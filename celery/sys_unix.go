//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package celery

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// rusage is getrusage(RUSAGE_SELF) with the keys Celery's stats uses.
func rusage() any {
	var r syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &r); err != nil {
		return "N/A"
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return map[string]any{
		"utime":    Float(tv(r.Utime)),
		"stime":    Float(tv(r.Stime)),
		"maxrss":   int64(r.Maxrss),
		"ixrss":    int64(r.Ixrss),
		"idrss":    int64(r.Idrss),
		"isrss":    int64(r.Isrss),
		"minflt":   int64(r.Minflt),
		"majflt":   int64(r.Majflt),
		"nswap":    int64(r.Nswap),
		"inblock":  int64(r.Inblock),
		"oublock":  int64(r.Oublock),
		"msgsnd":   int64(r.Msgsnd),
		"msgrcv":   int64(r.Msgrcv),
		"nsignals": int64(r.Nsignals),
		"nvcsw":    int64(r.Nvcsw),
		"nivcsw":   int64(r.Nivcsw),
	}
}

// rss returns the resident set size in bytes, from /proc where there is
// one; ok is false elsewhere.
func rss() (int64, bool) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * int64(os.Getpagesize()), true
}

// kernelRelease is what Python's platform.release() says, where known.
func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// loadavg is celery.utils.sysinfo.load_average(): the 1, 5 and 15 minute
// load averages rounded to two places, from /proc where there is one.
func loadavg() []float64 {
	out := []float64{0, 0, 0}
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return out
	}
	for i, f := range strings.Fields(string(b)) {
		if i == 3 {
			break
		}
		if v, err := strconv.ParseFloat(f, 64); err == nil {
			out[i] = float64(int64(v*100+0.5)) / 100
		}
	}
	return out
}
