package provision

import "strings"

// NATSError returns err with the doubled "nats: nats: " prefix that nats.go
// gives a JetStream publish refusal ("nats: nats: API error: …") said once.
// The result still wraps err, so errors.Is and errors.As see through it.
func NATSError(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := msg
	for strings.Contains(clean, "nats: nats: ") {
		clean = strings.ReplaceAll(clean, "nats: nats: ", "nats: ")
	}
	if clean == msg {
		return err
	}
	return &natsError{msg: clean, err: err}
}

type natsError struct {
	msg string
	err error
}

func (e *natsError) Error() string { return e.msg }
func (e *natsError) Unwrap() error { return e.err }
