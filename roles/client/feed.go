package client

import (
	"sync"

	"chat/proto"
)

// feed decides which channel posts are shown, so that each is shown once
// and in order, although they come from two places: live from the broker
// (the subscriber's goroutine) and from history (Run's goroutine, on
// /join and after a reconnect).
//
// A post is shown only if its id was not shown before in its channel
// (servers publish concurrently, so ids can arrive out of order: a lower
// id after a higher one is still new); a post without an id (0: a server
// that does not send them) is always shown. While the client is away from the broker, and
// while a /join fetches the channel's history, live posts are held back,
// and shown after what history returned, dropping those already shown.
type feed struct {
	mu      sync.Mutex
	show    func(proto.Post)     // called with mu held, so shows keep their order
	shown   map[string]*shownIDs // per channel, the post ids shown
	away    bool                 // the broker was lost and what was missed is not fetched yet
	losses  int                  // times the broker was lost; tells a stale catch-up from a current one
	joining int                  // /join history fetches in progress
	held    []proto.Post         // live posts waiting for the history before them
}

func newFeed(show func(proto.Post)) *feed {
	return &feed{show: show, shown: map[string]*shownIDs{}}
}

// recentIDs is how many post ids per channel the feed remembers one by
// one; older ones are remembered by a floor (every id at or below it
// counts as shown). A post arriving more than this many posts late is
// taken for one already shown.
const recentIDs = 1024

// shownIDs is the set of post ids shown in one channel: the last
// recentIDs exactly, the rest by a floor.
type shownIDs struct {
	ids   map[int64]bool
	ring  []int64 // the remembered ids, in the order they were shown
	next  int     // where the next id goes in ring once it is full
	floor int64   // every id at or below it counts as shown
	high  int64   // the highest id shown
}

func (s *shownIDs) has(id int64) bool { return id <= s.floor || s.ids[id] }

func (s *shownIDs) add(id int64) {
	s.high = max(s.high, id)
	s.ids[id] = true
	if len(s.ring) < recentIDs {
		s.ring = append(s.ring, id)
		return
	}
	old := s.ring[s.next]
	delete(s.ids, old)
	s.floor = max(s.floor, old)
	s.ring[s.next] = id
	s.next = (s.next + 1) % recentIDs
}

// ids returns channel's set, made on first use. f.mu must be held.
func (f *feed) ids(channel string) *shownIDs {
	s := f.shown[channel]
	if s == nil {
		s = &shownIDs{ids: map[int64]bool{}}
		f.shown[channel] = s
	}
	return s
}

// live takes a post as it arrives from the broker.
func (f *feed) live(p proto.Post) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.away || f.joining > 0 {
		f.held = append(f.held, p)
		return
	}
	f.admit(p)
}

// fetched takes posts from history, oldest first, and returns how many
// of them were shown.
func (f *feed) fetched(posts []proto.Post) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	shown := 0
	for _, p := range posts {
		if f.admit(p) {
			shown++
		}
	}
	return shown
}

// admit shows p unless it was shown already, and reports whether it
// showed it. f.mu must be held.
func (f *feed) admit(p proto.Post) bool {
	if p.ID != 0 {
		ids := f.ids(p.Channel)
		if ids.has(p.ID) {
			return false
		}
		ids.add(p.ID)
	}
	f.show(p)
	return true
}

// lastID returns the highest id shown in channel (0: none).
func (f *feed) lastID(channel string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ids(channel).high
}

// mark records that channel's posts up to id were shown (by /join's
// history, which shows them itself).
func (f *feed) mark(channel string, id int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := f.ids(channel)
	ids.floor, ids.high = max(ids.floor, id), max(ids.high, id)
}

// lost records that the broker was lost: live posts are held until
// caughtUp.
func (f *feed) lost() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.away = true
	f.losses++
}

// lossCount returns the number of losses so far, for caughtUp.
func (f *feed) lossCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.losses
}

// caughtUp ends the hold of a loss once history has filled the gap it
// left. losses is lossCount from before the history was fetched: if the
// broker was lost again since, the hold stays for the next catch-up.
func (f *feed) caughtUp(losses int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.losses == losses {
		f.away = false
		f.flush()
	}
}

// startJoin holds live posts while /join fetches and shows history;
// endJoin shows them.
func (f *feed) startJoin() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.joining++
}

func (f *feed) endJoin() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.joining--
	f.flush()
}

// flush shows the held posts if nothing holds them any more. f.mu must be
// held.
func (f *feed) flush() {
	if f.away || f.joining > 0 {
		return
	}
	for _, p := range f.held {
		f.admit(p)
	}
	f.held = nil
}
