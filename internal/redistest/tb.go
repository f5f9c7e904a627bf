package redistest

// TB is the part of testing.TB these helpers use. Taking it instead of
// testing.TB keeps package testing out of the programs that start brokers
// outside tests (the bench), as goleak does with its TestingT.
type TB interface {
	Helper()
	Cleanup(func())
	TempDir() string
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Failed() bool
	Skip(args ...any)
}
