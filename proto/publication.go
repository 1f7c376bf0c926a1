package proto

import (
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// ServersTopic is the topic of coordinator announcements.
const ServersTopic = "servers"

// Post is a channel post as published on the bus (topic: the channel name)
// and as returned by history.
type Post struct {
	ID        int64  // extension: the server's message id (0 if unknown)
	Channel   string // extension: also the topic
	User      string
	Text      string
	Timestamp time.Time
	Clock     uint64
}

// Direct is a direct message as published on the bus (topic: the
// recipient's name) and as returned by history.
type Direct struct {
	ID        int64
	From      string
	To        string // extension: also the topic
	Text      string
	Timestamp time.Time
	Clock     uint64
}

// Data returns the post's payload map.
func (p Post) Data() Data {
	d := Data{"user": p.User, "message": p.Text, "timestamp": p.Timestamp.Unix(), "clock": p.Clock, "channel": p.Channel}
	if p.ID != 0 {
		d["id"] = p.ID
	}
	return d
}

// Data returns the direct message's payload map.
func (m Direct) Data() Data {
	d := Data{"from": m.From, "message": m.Text, "timestamp": m.Timestamp.Unix(), "clock": m.Clock, "to": m.To}
	if m.ID != 0 {
		d["id"] = m.ID
	}
	return d
}

// Publication is one two-frame message of the bus: [topic][payload].
type Publication struct {
	Topic   string
	Payload []byte
}

// Frames returns the publication as the two frames to send.
func (p Publication) Frames() [][]byte { return [][]byte{[]byte(p.Topic), p.Payload} }

// PostPublication builds the publication of a channel post.
func PostPublication(p Post) Publication {
	return Publication{Topic: p.Channel, Payload: mustMarshal(p.Data())}
}

// DirectPublication builds the publication of a direct message.
func DirectPublication(m Direct) Publication {
	return Publication{Topic: m.To, Payload: mustMarshal(m.Data())}
}

// Received is a publication as a subscriber reads it: a post, a direct
// message or a coordinator announcement (the one set is non-nil).
type Received struct {
	Topic       string
	Post        *Post
	Direct      *Direct
	Coordinator string // name of the announced coordinator
	Clock       uint64
}

// DecodePublication parses the two frames of a publication.
func DecodePublication(frames [][]byte) (Received, error) {
	if len(frames) != 2 {
		return Received{}, fmt.Errorf("publication has %d frames, want 2", len(frames))
	}
	r := Received{Topic: string(frames[0])}
	var d Data
	if err := wellFormed(frames[1]); err != nil {
		return r, fmt.Errorf("publication payload: %w", err)
	}
	if err := msgpack.Unmarshal(frames[1], &d); err != nil {
		return r, fmt.Errorf("publication payload: %w", err)
	}
	if r.Topic == ServersTopic {
		if inner, ok := d["data"].(map[string]any); ok {
			r.Coordinator, _, _ = Data(inner).String("", "coordinator")
			r.Clock = Data(inner).Clock()
			return r, nil
		}
	}
	r.Clock = d.Clock()
	ts, _ := d.Timestamp()
	id, _, _ := d.Int("", "id")
	text, _, _ := d.String("", "message")
	if from, ok, _ := d.String("", "from"); ok {
		to, _, _ := d.String("", "to")
		if to == "" {
			to = r.Topic
		}
		r.Direct = &Direct{ID: id, From: from, To: to, Text: text, Timestamp: ts, Clock: r.Clock}
		return r, nil
	}
	user, _, _ := d.String("", "user")
	ch, _, _ := d.String("", "channel")
	if ch == "" {
		ch = r.Topic
	}
	r.Post = &Post{ID: id, Channel: ch, User: user, Text: text, Timestamp: ts, Clock: r.Clock}
	return r, nil
}

func mustMarshal(v any) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("proto: marshal: %v", err))
	}
	return b
}
