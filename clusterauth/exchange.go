package clusterauth

import (
	"context"
	"errors"
	"fmt"

	"chat/proto"
)

// ErrRequired is the refusal of a member-only request that came without
// an authenticator.
var ErrRequired = errors.New(RequiredText)

// Exchange is one authenticated request: it wraps frame (label Request),
// sends it with do, and returns the reply inside the answer, checked
// (WrapReply). A nil Member (an open cluster) sends frame as it is.
//
// A plain erro reply is returned as it is: a member refusing a request
// (a stale clock, a server without the key) cannot authenticate its
// refusal, and the refusal only explains; any other plain reply is an
// error, since it may come from a process that is not a member.
func (m *Member) Exchange(ctx context.Context, do func(context.Context, []byte) ([]byte, error), frame []byte) ([]byte, error) {
	if m == nil {
		return do(ctx, frame)
	}
	wrapped, tag := m.Wrap(Request, frame)
	reply, err := do(ctx, wrapped)
	if err != nil {
		return nil, err
	}
	inner, err := m.UnwrapReply(tag, reply)
	if err == nil {
		return inner, nil
	}
	if env, derr := proto.Decode(reply); derr == nil && env.Data["status"] == proto.StatusError {
		return reply, nil
	}
	return nil, err
}

// Admit is a receiver's check of a request frame. An authenticated
// envelope is checked (label Request) and the frame inside returned with
// its Tag, for Answer. A plain frame of a member-only service (membersOnly
// reports which) is refused with ErrRequired. Any other plain frame (a
// client's request) is returned as it is, with a zero Tag. A nil Member
// (an open cluster) admits every frame as it is.
func (m *Member) Admit(frame []byte, membersOnly func(service string) bool) ([]byte, Tag, error) {
	if m == nil {
		return frame, Tag{}, nil
	}
	service := proto.PeekService(frame)
	if service == Service {
		inner, tag, err := m.Unwrap(Request, frame)
		if err != nil {
			return nil, Tag{}, fmt.Errorf("%s: %w", RequiredText, err)
		}
		return inner, tag, nil
	}
	if membersOnly(service) {
		return nil, Tag{}, ErrRequired
	}
	return frame, Tag{}, nil
}

// Answer is the reply to a request Admit let in: wrapped for the request
// of tag when it was authenticated, as it is otherwise.
func (m *Member) Answer(tag Tag, reply []byte) []byte {
	if m == nil || tag.MAC == nil {
		return reply
	}
	return m.WrapReply(tag, reply)
}
