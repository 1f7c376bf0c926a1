package client

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Subscription states, as the status line shows them.
const (
	subNone       = "no sub"         // no pub-out endpoint (--sub "")
	subConnecting = "sub connecting" // not connected to the broker yet
	subOK         = "sub ok"
	subLost       = "sub lost" // lost the broker, reconnecting
)

// status is what the status line shows: who and where the user is, and
// how many posts arrived in each joined channel that is not the current
// one since it last was. Run's goroutine sets the session's part, the
// subscriber's goroutine the subscription state and the unread counts.
type status struct {
	mu      sync.Mutex
	user    string
	server  string
	sub     string
	joined  []string // in the order joined
	current string
	unread  map[string]int
}

func newStatus(sub string) *status {
	return &status{sub: sub, unread: map[string]int{}}
}

// setSession records the session's state; the current channel's posts
// count as read.
func (st *status) setSession(user, server string, joined []string, current string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.user, st.server, st.current = user, server, current
	st.joined = append(st.joined[:0], joined...)
	for ch := range st.unread {
		if ch == current || !slices.Contains(joined, ch) {
			delete(st.unread, ch)
		}
	}
}

// setSub records the subscription state.
func (st *status) setSub(state string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.sub = state
}

// posted counts a post shown in channel as unread unless it is current.
func (st *status) posted(channel string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if channel != st.current && slices.Contains(st.joined, channel) {
		st.unread[channel]++
	}
}

// unreadIn returns how many posts of channel are unread.
func (st *status) unreadIn(channel string) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.unread[channel]
}

// prompt renders the status line and the prompt in one line, such as
// "[alice@localhost:5555 · sub ok · #ops(3) #dev] #lab> ": the user and
// the server requests go to, the subscription state, the other joined
// channels with their unread counts, then the current channel.
func (st *status) prompt() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	where := strings.TrimPrefix(st.server, "tcp://")
	if st.user != "" {
		where = st.user + "@" + where
	}
	parts := []string{where, st.sub}
	var others []string
	for _, ch := range st.joined {
		switch n := st.unread[ch]; {
		case ch == st.current:
		case n > 0:
			others = append(others, fmt.Sprintf("#%s(%d)", ch, n))
		default:
			others = append(others, "#"+ch)
		}
	}
	if len(others) > 0 {
		parts = append(parts, strings.Join(others, " "))
	}
	cur := ""
	if st.current != "" {
		cur = "#" + st.current
	}
	return printable("["+strings.Join(parts, " · ")+"] "+cur) + "> "
}
