package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"chat/clock"
	"chat/proto"
	"chat/transport"
)

// ReplyError is an "erro" reply: the server (or the broker) refused the
// request and said why.
type ReplyError struct {
	Service string // the refused request's service
	Text    string // the reply's description (or message) text
	Retry   bool   // the broker asks to send the request again ("retry": true)
}

// Error returns the reply's text.
func (e *ReplyError) Error() string { return e.Text }

// Call sends one request of service with data over c and returns the
// reply's data. The request is stamped with the current time and the next
// tick of lamport, and the reply's clock is observed. An "erro" reply is
// returned as a *ReplyError; no reply at all is the transport's error
// (wrapping transport.ErrNoReply) or ctx.Err().
func Call(ctx context.Context, c *transport.Client, lamport *clock.Lamport, service string, data proto.Data) (proto.Data, error) {
	req := proto.Envelope{Service: service, Data: data}.Stamp(time.Now(), lamport.Tick())
	frame, err := c.Do(ctx, req.Encode())
	if err != nil {
		return nil, err
	}
	reply, err := proto.Decode(frame)
	if err != nil {
		return nil, fmt.Errorf("unreadable reply to %s: %w", service, err)
	}
	lamport.Observe(reply.Data.Clock())
	if status, _, _ := reply.Data.String(service, "status"); status == proto.StatusError {
		return nil, replyError(service, reply.Data)
	}
	return reply.Data, nil
}

// replyError turns the data of an "erro" reply into a *ReplyError.
func replyError(service string, d proto.Data) *ReplyError {
	text, _, _ := d.String(service, "description")
	if text == "" {
		text, _, _ = d.String(service, "message")
	}
	if text == "" {
		text = service + " was refused (no reason given)"
	}
	retry, _ := d["retry"].(bool)
	return &ReplyError{Service: service, Text: text, Retry: retry}
}

// NewRequestID returns a random request_id. It is unique across clients
// and runs, so a server never mistakes a new request for a retry.
func NewRequestID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ReplyList returns the first of keys in d that holds a list, as strings
// (items that are not strings are skipped). The standard's "channels"
// reply carries its list under both "channels" and "users".
func ReplyList(d proto.Data, keys ...string) []string {
	for _, k := range keys {
		items, ok := d[k].([]any)
		if !ok {
			continue
		}
		out := make([]string, 0, len(items))
		for _, it := range items {
			if s, ok := it.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
