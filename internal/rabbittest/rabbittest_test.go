package rabbittest_test

import (
	"net"
	"os"
	"testing"

	"github.com/gopidbox/pidbox/internal/rabbittest"
)

func TestMain(m *testing.M) { os.Exit(rabbittest.Main(m.Run)) }

// The shared broker answers, and comes back after a stop.
func TestStartStop(t *testing.T) {
	s := rabbittest.Get(t)
	t.Logf("boot took %s", s.BootTime)
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Stop()
	if c, err := net.Dial("tcp", s.Addr()); err == nil {
		c.Close()
		t.Fatal("broker still listening after Stop")
	}
	s.Start()
	t.Logf("restart took %s", s.BootTime)
	c, err = net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
