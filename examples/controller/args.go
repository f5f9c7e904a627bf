package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// arguments builds the command's keyword arguments from --args (a JSON
// object) and key=value pairs, where a value is JSON when it parses as
// JSON, else a string: level=debug is "debug", n=3 is 3, soft=1.5 is 1.5.
//
// Numbers keep the type they are written with, as `celery control` sends
// them to a Python handler: 3 stays an int (Celery's handlers do range(n)
// and arithmetic with such arguments), 3.0 stays a float, and 2^64-1 and
// larger integers keep every digit. A number the serializer cannot carry
// as written is a usage error, never a silent change.
func (c *cli) arguments(pairs []string) (map[string]any, error) {
	return parseArguments(c.argsJSON, pairs, c.serializer)
}

func parseArguments(argsJSON string, pairs []string, serializer string) (map[string]any, error) {
	args := map[string]any{}
	if argsJSON != "" {
		v, err := decodeNumbers(argsJSON)
		if err != nil {
			return nil, usagef("--args must be a JSON object: %v", err)
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, usagef("--args must be a JSON object, not %s", kindOf(v))
		}
		args = m
	}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usagef("argument %q: want key=value", p)
		}
		if parsed, err := decodeNumbers(v); err == nil {
			args[k] = parsed
		} else {
			args[k] = v
		}
	}
	for k, v := range args {
		conv, err := forSerializer(v, serializer)
		if err != nil {
			return nil, usageError{fmt.Errorf("argument %s: %w", k, err)}
		}
		args[k] = conv
	}
	return args, nil
}

// decodeNumbers parses one JSON value, keeping numbers as json.Number.
func decodeNumbers(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if rest := bytes.TrimLeft([]byte(s[dec.InputOffset():]), " \t\r\n"); len(rest) > 0 {
		return nil, fmt.Errorf("invalid character %q after the value", rest[0])
	}
	return v, nil
}

var errNumber = errors.New("cannot be sent as written")

// forSerializer readies a parsed value for the mailbox's serializer. For
// json a number is sent as written (3.0 stays 3.0, big integers keep every
// digit); for msgpack an integer becomes an int64 (uint64 above
// math.MaxInt64) and a number with a fraction or an exponent a float64.
func forSerializer(v any, serializer string) (any, error) {
	switch x := v.(type) {
	case json.Number:
		return number(x, serializer)
	case map[string]any:
		for k, e := range x {
			c, err := forSerializer(e, serializer)
			if err != nil {
				return nil, err
			}
			x[k] = c
		}
	case []any:
		for i, e := range x {
			c, err := forSerializer(e, serializer)
			if err != nil {
				return nil, err
			}
			x[i] = c
		}
	}
	return v, nil
}

func number(n json.Number, serializer string) (any, error) {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		if serializer != "msgpack" {
			return n, nil // Python's json reads any integer exactly
		}
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return u, nil
		}
		return nil, fmt.Errorf("%w: the integer %s does not fit msgpack's 64 bits (use --serializer json)", errNumber, s)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		return nil, fmt.Errorf("%w: %s is beyond a float's range", errNumber, s)
	}
	if serializer != "msgpack" {
		return n, nil
	}
	return f, nil
}

func kindOf(v any) string {
	switch v.(type) {
	case []any:
		return "an array"
	case string:
		return "a string"
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}

// Unwrap lets errors.Is see through a usage error to its cause.
func (e usageError) Unwrap() error { return e.error }
