package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/reply"
	"github.com/spf13/cobra"
)

// statsCommand is `controller stats`: one broadcast of the built-in
// pidbox_stats command, and a table of every command across the fleet.
func (c *cli) statsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Per-command counts across the fleet (calls, errors, times, last error)",
		Long: `stats broadcasts the built-in pidbox_stats command (every Go node
answers it, even where a Celery-shaped stats replaces the built-in stats)
and prints one row per command, summed over the nodes that replied:
calls, errors, average and maximum processing time, and the latest error
with the node it came from. Nodes that cannot answer it (Celery workers)
are listed. --json prints the rows and every node's full stats.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return c.stats(cmd.Context()) },
	}
}

// commandRow is one command summed over the fleet: the nodes' handler
// stats added up, with the node of the latest error.
type commandRow struct {
	Command string `json:"command"`
	Nodes   int    `json:"nodes"`
	pidbox.HandlerStats
	LastErrorNode string `json:"last_error_node,omitempty"`
}

// fleetStats is what `stats --json` prints.
type fleetStats struct {
	Commands []commandRow                `json:"commands"`
	Nodes    map[string]pidbox.NodeStats `json:"nodes"`
	// Unanswered maps the nodes that replied with an error (a Celery
	// worker knows no pidbox_stats) to that error.
	Unanswered map[string]string `json:"unanswered,omitempty"`
	Missing    []string          `json:"missing,omitempty"`
}

func (c *cli) stats(ctx context.Context) error {
	s, opts, _, err := c.prepare(ctx, nil)
	if err != nil {
		return err
	}
	defer s.close()
	res, err := s.mb.Call(ctx, "pidbox_stats", nil, opts...)
	if err != nil && !errors.Is(err, pidbox.ErrIncomplete) {
		return err
	}
	fs := fleetStats{Nodes: map[string]pidbox.NodeStats{}, Unanswered: map[string]string{}, Missing: res.Missing()}
	for _, r := range res.Replies {
		if r.Err != nil {
			var re *reply.RemoteError
			if errors.As(r.Err, &re) {
				fs.Unanswered[r.Node] = re.Message
			}
			continue
		}
		st, err := reply.As[pidbox.NodeStats](r)
		if err != nil {
			fs.Unanswered[r.Node] = err.Error()
			continue
		}
		fs.Nodes[r.Node] = st
	}
	fs.Commands = summarize(fs.Nodes)
	if c.jsonOut {
		out, err := json.Marshal(fs)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, string(out))
	} else {
		printStats(c.stdout, fs)
	}
	switch {
	case len(fs.Nodes) == 0:
		fmt.Fprintf(c.stderr, "controller: no node returned pidbox stats within %s\n", c.timeout)
		c.exit = exitNoReply
	case len(fs.Missing) > 0:
		c.exit = exitMissing
	}
	return nil
}

// summarize sums every command's counts over the nodes, sorted by
// total processing time, the busiest first.
func summarize(nodes map[string]pidbox.NodeStats) []commandRow {
	rows := map[string]*commandRow{}
	for node, st := range nodes {
		for name, h := range st.Handlers {
			r := rows[name]
			if r == nil {
				r = &commandRow{Command: name}
				rows[name] = r
			}
			r.Nodes++
			r.Calls += h.Calls
			r.Errors += h.Errors
			r.Running += h.Running
			r.Waiting += h.Waiting
			r.TotalSeconds += h.TotalSeconds
			r.MaxSeconds = max(r.MaxSeconds, h.MaxSeconds)
			if h.LastError != "" && h.LastErrorAt > r.LastErrorAt { // RFC 3339 in UTC sorts as text
				r.LastError, r.LastErrorNode, r.LastErrorAt = h.LastError, node, h.LastErrorAt
			}
		}
	}
	out := make([]commandRow, 0, len(rows))
	for _, r := range rows {
		if r.Calls > 0 {
			r.AverageSeconds = r.TotalSeconds / float64(r.Calls)
		}
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].TotalSeconds != out[j].TotalSeconds {
			return out[i].TotalSeconds > out[j].TotalSeconds
		}
		return out[i].Command < out[j].Command
	})
	return out
}

func printStats(w io.Writer, fs fleetStats) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "COMMAND\tNODES\tCALLS\tERRORS\tRUNNING\tAVG\tMAX\tLAST ERROR")
	for _, r := range fs.Commands {
		last := ""
		if r.LastError != "" {
			last = fmt.Sprintf("%s: %s", r.LastErrorNode, clip(r.LastError, 60))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", r.Command, r.Nodes, r.Calls, r.Errors, r.Running,
			seconds(r.AverageSeconds), seconds(r.MaxSeconds), last)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d %s reported.\n", len(fs.Nodes), plural(len(fs.Nodes), "node", "nodes"))
	names := make([]string, 0, len(fs.Unanswered))
	for n := range fs.Unanswered {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "No pidbox stats from: %s (%s)\n", n, clip(fs.Unanswered[n], 60))
	}
	for _, n := range fs.Missing {
		fmt.Fprintf(w, "No reply from: %s\n", n)
	}
}

// seconds prints a duration in seconds at a readable precision.
func seconds(s float64) string {
	if s == 0 {
		return "-"
	}
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Microsecond:
		return d.String()
	case d < time.Millisecond:
		return d.Round(100 * time.Nanosecond).String()
	case d < time.Second:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

func clip(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
