// Command controller sends pidbox commands to workers and prints their
// replies: a fast drop-in for `celery inspect` and `celery control` that
// works with Celery workers and Go workers alike.
//
//	controller ping
//	controller inspect stats -d celery@host1
//	controller call set_log_level level=debug --pattern 'worker*'
//	controller cast pause
//	controller shutdown -d worker1@host
//	controller nodes
//	controller demo            # a tour on an in-process fleet
//
// It returns as soon as it has what it asked for: every destination
// replied, the limit was reached, or every node known to be alive replied.
// Exit status: 0 when every expected node replied; 1 when no node replied
// or the command failed; 2 on a usage error; 3 when some nodes replied but
// an expected node (a destination, or a node known to be alive) did not.
package main

import (
	"context"
	"os"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
