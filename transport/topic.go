package transport

import (
	"regexp"
	"strings"
	"unicode"
)

// TopicMatch reports whether a topic exchange routes a message with
// routingKey to a queue bound under bindingKey, exactly as Kombu's virtual
// TopicExchange does (kombu/transport/virtual/exchange.py), which is what
// Celery and Kombu peers on the same Redis apply:
//
//   - keys are words separated by ".";
//   - "#" matches any run of characters, so "#" matches every key and
//     "worker.#" every key that starts with "worker.";
//   - "*" matches one or more characters that do not end in ".", which is a
//     single word in every case AMQP brokers agree on.
//
// Kombu is more lenient than an AMQP broker in two corners, and TopicMatch
// follows Kombu: "worker.*" also matches "worker.a.b", and "worker.#" does
// not match "worker" alone.
func TopicMatch(bindingKey, routingKey string) bool {
	re, err := regexp.Compile(topicRegexp(bindingKey))
	if err != nil { // cannot happen: every word is quoted
		return false
	}
	return re.MatchString(routingKey)
}

// topicRegexp is Kombu's key_to_pattern in RE2 syntax. "$" becomes
// "\n?\z", which is what Python's "$" means.
func topicRegexp(bindingKey string) string {
	words := strings.Split(bindingKey, ".")
	for i, w := range words {
		switch w {
		case "*":
			words[i] = `.*?[^\.]`
		case "#":
			words[i] = `.*?`
		default:
			words[i] = regexp.QuoteMeta(w)
		}
	}
	return `^` + strings.Join(words, `\.`) + `\n?\z`
}

// TopicPattern returns the regular expression Kombu stores beside a topic
// binding's key in its binding table (key_to_pattern): "^" + the words
// joined by "\." + "$", with "*" as ".*?[^\.]", "#" as ".*?" and every
// other character that is not a letter or digit escaped with a backslash.
// Brokers that share their binding table with Kombu, as Redis does, store
// it so that Python publishers route to Go queues.
func TopicPattern(bindingKey string) string {
	var b strings.Builder
	b.WriteByte('^')
	for i, w := range strings.Split(bindingKey, ".") {
		if i > 0 {
			b.WriteString(`\.`)
		}
		switch w {
		case "*":
			b.WriteString(`.*?[^\.]`)
		case "#":
			b.WriteString(`.*?`)
		default:
			for _, r := range w {
				switch {
				case r == 0:
					b.WriteString(`\000`)
				case unicode.IsLetter(r) || unicode.IsNumber(r) || r == '#' || r == '*':
					b.WriteRune(r)
				default:
					b.WriteByte('\\')
					b.WriteRune(r)
				}
			}
		}
	}
	b.WriteByte('$')
	return b.String()
}
