package main

import "github.com/gopidbox/pidbox/internal/wire"

// marshalValue writes a decoded reply value as JSON the way Celery's
// command line prints it (Python's json): a float keeps its fraction, so
// 3.0 prints as 3.0, not 3, and stays apart from the int 3. Integers are
// exact (the codecs decode them as int64, uint64 or json.Number).
func marshalValue(v any) ([]byte, error) { return wire.JSON{}.Marshal(v) }
