package pidbox

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/gopidbox/pidbox/internal/wire"
)

// maxPatternLen bounds the patterns a node compiles, so hostile input
// cannot make it build huge automata.
const maxPatternLen = 1024

// Match reports whether a node name is selected by a pattern under a
// matcher, with Kombu's semantics:
//
//   - "glob" is Python's fnmatch.fnmatch on POSIX: case-sensitive, with
//     "*", "?", "[seq]" and "[!seq]"; there is no way to quote "*" or "?".
//   - "pcre" is Python's re.match: a regular expression anchored at the
//     start of the name but not at its end ("w.1" matches "w11x"). Go's
//     regexp package (RE2) runs it, so backreferences and lookaround are
//     refused with an error; "\Z" is read as end of text.
func Match(name, pattern, matcher string) (bool, error) {
	re, err := compilePattern(pattern, matcher)
	if err != nil {
		return false, err
	}
	return re.MatchString(name), nil
}

func compilePattern(pattern, matcher string) (*regexp.Regexp, error) {
	if len(pattern) > maxPatternLen {
		return nil, fmt.Errorf("%w: pattern of %d bytes is above the %d-byte limit", ErrBadPattern, len(pattern), maxPatternLen)
	}
	var expr string
	switch matcher {
	case wire.MatchGlob:
		expr = globToRegexp(pattern)
	case wire.MatchPCRE:
		expr = `\A(?:` + pcreToRE2(pattern) + `)`
	default:
		return nil, fmt.Errorf("%w: unknown matcher %q (want glob or pcre)", ErrBadPattern, matcher)
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("%w: %s pattern %q: %v", ErrBadPattern, matcher, pattern, err)
	}
	return re, nil
}

// patternCache keeps the patterns a node compiled recently. It is bounded:
// when full it starts over.
type patternCache struct {
	mu sync.Mutex
	m  map[[2]string]cachedPattern
}

type cachedPattern struct {
	re  *regexp.Regexp
	err error
}

const patternCacheSize = 64

func (c *patternCache) match(name, pattern, matcher string) (bool, error) {
	key := [2]string{pattern, matcher}
	c.mu.Lock()
	p, ok := c.m[key]
	c.mu.Unlock()
	if !ok {
		p.re, p.err = compilePattern(pattern, matcher)
		c.mu.Lock()
		if c.m == nil || len(c.m) >= patternCacheSize {
			c.m = make(map[[2]string]cachedPattern, patternCacheSize)
		}
		c.m[key] = p
		c.mu.Unlock()
	}
	if p.err != nil {
		return false, p.err
	}
	return p.re.MatchString(name), nil
}

// pcreToRE2 rewrites Python's \Z (end of text) to RE2's \z; RE2 has no \Z.
func pcreToRE2(p string) string {
	if !strings.Contains(p, `\Z`) {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '\\' && i+1 < len(p) {
			if p[i+1] == 'Z' {
				b.WriteString(`\z`)
			} else {
				b.WriteString(p[i : i+2])
			}
			i++
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// globToRegexp translates a shell pattern to RE2 the way Python 3.11's
// fnmatch.translate does, including its treatment of "[!...]", a leading
// "]" in a set, an unclosed "[", and empty ranges such as "[z-a]".
func globToRegexp(pat string) string {
	p := []rune(pat)
	n := len(p)
	var b strings.Builder
	b.WriteString(`\A(?s:`)
	lit := func(r rune) { fmt.Fprintf(&b, `\x{%x}`, r) }
	for i := 0; i < n; {
		c := p[i]
		i++
		switch c {
		case '*':
			for i < n && p[i] == '*' {
				i++
			}
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		case '[':
			j := i
			if j < n && p[j] == '!' {
				j++
			}
			if j < n && p[j] == ']' {
				j++
			}
			for j < n && p[j] != ']' {
				j++
			}
			if j >= n {
				lit('[')
				continue
			}
			chunks := globChunks(p, i, j)
			i = j + 1
			negate := false
			if len(chunks) > 0 && len(chunks[0]) > 0 && chunks[0][0] == '!' {
				negate = true
				chunks[0] = chunks[0][1:]
			}
			if len(chunks) == 0 || (len(chunks) == 1 && len(chunks[0]) == 0) {
				if negate {
					b.WriteString(`.`) // negated empty set: any character
				} else {
					b.WriteString(`[^\x00-\x{10FFFF}]`) // empty set: nothing
				}
				continue
			}
			b.WriteByte('[')
			if negate {
				b.WriteByte('^')
			}
			for k, ch := range chunks {
				if k > 0 {
					b.WriteByte('-') // a range between the chunks
				}
				for _, r := range ch {
					lit(r)
				}
			}
			b.WriteByte(']')
		default:
			if c == utf8.RuneError {
				b.WriteString(`\x{fffd}`)
				continue
			}
			lit(c)
		}
	}
	b.WriteString(`)\z`)
	return b.String()
}

// globChunks splits the set p[i:j] at the hyphens that form ranges, and
// drops empty ranges, as fnmatch.translate does. Adjacent chunks are joined
// by a range: the last rune of one to the first rune of the next.
func globChunks(p []rune, i, j int) [][]rune {
	hasHyphen := false
	for _, r := range p[i:j] {
		if r == '-' {
			hasHyphen = true
			break
		}
	}
	if !hasHyphen {
		return [][]rune{append([]rune(nil), p[i:j]...)}
	}
	var chunks [][]rune
	k := i + 1
	if p[i] == '!' {
		k = i + 2
	}
	for {
		k = indexRune(p, '-', k, j)
		if k < 0 {
			break
		}
		chunks = append(chunks, append([]rune(nil), p[i:k]...))
		i = k + 1
		k += 3
	}
	if i < j {
		chunks = append(chunks, append([]rune(nil), p[i:j]...))
	} else {
		chunks[len(chunks)-1] = append(chunks[len(chunks)-1], '-')
	}
	for k := len(chunks) - 1; k > 0; k-- {
		prev, cur := chunks[k-1], chunks[k]
		if prev[len(prev)-1] > cur[0] {
			chunks[k-1] = append(prev[:len(prev)-1:len(prev)-1], cur[1:]...)
			chunks = append(chunks[:k], chunks[k+1:]...)
		}
	}
	return chunks
}

func indexRune(p []rune, r rune, from, to int) int {
	for k := from; k < to; k++ {
		if p[k] == r {
			return k
		}
	}
	return -1
}
