package clusterauth

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Service is the service name of an authenticated envelope: a message
// wrapped with its authenticator,
//
//	{"service": "auth", "data": {"frame": <bin: the message>, "time": <int>,
//	                             "nonce": <bin 16>, "mac": <bin 32>}}
//
// the MAC being over the frame's exact bytes. Heartbeats on the broker's
// back end (label Heartbeat), requests to the reference and to the
// servers' cluster services (label Request) and their replies (label
// Reply) travel wrapped so.
const Service = "auth"

// RequiredText is the description of the erro reply to a request that
// does not prove the key.
const RequiredText = "this cluster requires its key"

// sealed is the data of an authenticated envelope.
type sealed struct {
	Frame []byte `msgpack:"frame"`
	Time  int64  `msgpack:"time"`
	Nonce []byte `msgpack:"nonce"`
	MAC   []byte `msgpack:"mac"`
}

type sealedEnvelope struct {
	Service string `msgpack:"service"`
	Data    sealed `msgpack:"data"`
}

// Wrap returns frame wrapped in an authenticated envelope for channel
// label, and its Tag (a requester keeps it to check the reply).
func (m *Member) Wrap(label string, frame []byte) ([]byte, Tag) {
	t := m.Seal(label, frame)
	return encodeSealed(frame, t), t
}

// Unwrap checks an authenticated envelope of channel label and returns
// the frame inside and its Tag. A frame that is not an authenticated
// envelope is ErrMalformed.
func (m *Member) Unwrap(label string, wrapped []byte) ([]byte, Tag, error) {
	s, err := decodeSealed(wrapped)
	if err != nil {
		return nil, Tag{}, err
	}
	t := Tag{Time: s.Time, Nonce: s.Nonce, MAC: s.MAC}
	if err := m.Check(label, t, s.Frame); err != nil {
		return nil, Tag{}, err
	}
	return s.Frame, t, nil
}

// WrapReply wraps reply, the answer to the request whose Tag is req: its
// MAC covers req.MAC then the reply, so it answers that request only.
func (m *Member) WrapReply(req Tag, reply []byte) []byte {
	return encodeSealed(reply, m.Seal(Reply, req.MAC, reply))
}

// UnwrapReply checks the wrapped answer to the request whose Tag is req
// and returns the reply inside. A plain (unwrapped) reply is refused with
// the error it carries, if any: a member's refusal is never
// authenticated, it only explains.
func (m *Member) UnwrapReply(req Tag, wrapped []byte) ([]byte, error) {
	s, err := decodeSealed(wrapped)
	if err != nil {
		return nil, fmt.Errorf("the reply is not authenticated with the cluster key: %w", err)
	}
	if err := m.CheckReply(Tag{Time: s.Time, Nonce: s.Nonce, MAC: s.MAC}, req.MAC, s.Frame); err != nil {
		return nil, fmt.Errorf("reply refused: %w", err)
	}
	return s.Frame, nil
}

// SealFrames returns the authenticator frame of a multi-frame message
// (a publication: [topic][payload]) on channel label: the Tag as a
// MessagePack map {"time", "nonce", "mac"}, the MAC being over every
// frame, each preceded by its length as 4 bytes, big-endian.
func (m *Member) SealFrames(label string, frames [][]byte) []byte {
	t := m.Seal(label, framesBody(frames))
	b, _ := msgpack.Marshal(tagFrame{Time: t.Time, Nonce: t.Nonce, MAC: t.MAC})
	return b
}

// CheckFrames checks a message whose last frame is the authenticator
// (SealFrames) and returns the frames before it.
func (m *Member) CheckFrames(label string, frames [][]byte) ([][]byte, error) {
	if len(frames) < 2 {
		return nil, ErrMalformed
	}
	var tf tagFrame
	if err := msgpack.Unmarshal(frames[len(frames)-1], &tf); err != nil {
		return nil, ErrMalformed
	}
	body := frames[:len(frames)-1]
	if err := m.Check(label, Tag{Time: tf.Time, Nonce: tf.Nonce, MAC: tf.MAC}, framesBody(body)); err != nil {
		return nil, err
	}
	return body, nil
}

type tagFrame struct {
	Time  int64  `msgpack:"time"`
	Nonce []byte `msgpack:"nonce"`
	MAC   []byte `msgpack:"mac"`
}

// framesBody is the bytes a multi-frame MAC covers.
func framesBody(frames [][]byte) []byte {
	n := 0
	for _, f := range frames {
		n += 4 + len(f)
	}
	b := make([]byte, 0, n)
	for _, f := range frames {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

func encodeSealed(frame []byte, t Tag) []byte {
	b, _ := msgpack.Marshal(sealedEnvelope{Service: Service, Data: sealed{Frame: frame, Time: t.Time, Nonce: t.Nonce, MAC: t.MAC}})
	return b
}

func decodeSealed(wrapped []byte) (sealed, error) {
	var env sealedEnvelope
	if err := msgpack.Unmarshal(wrapped, &env); err != nil || env.Service != Service {
		return sealed{}, ErrMalformed
	}
	if len(env.Data.Frame) == 0 {
		return sealed{}, errors.Join(ErrMalformed, errors.New("no frame"))
	}
	return env.Data, nil
}
