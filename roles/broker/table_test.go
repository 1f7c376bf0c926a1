package broker

import (
	"slices"
	"strings"
	"testing"
	"time"

	"chat/proto"
)

func TestTableRoundRobinOverLiveServersOnly(t *testing.T) {
	now := time.Unix(0, 0)
	tb := newTable(3*time.Second, 10*time.Second)
	if _, ok := tb.assign(nil, nil, now); ok {
		t.Fatal("assigned a request with no server alive")
	}
	hb(tb, "a", now)
	hb(tb, "b", now)
	hb(tb, "c", now)
	var got []string
	for range 6 {
		p, ok := tb.assign(nil, nil, now)
		if !ok {
			t.Fatal("no server")
		}
		got = append(got, p.server)
		tb.complete(p.seq)
	}
	if want := "abcabc"; join(got) != want {
		t.Fatalf("order %v, want %s", got, want)
	}

	// b falls silent: it is taken out, and only the request it held is lost.
	later := now.Add(4 * time.Second)
	hb(tb, "a", later)
	hb(tb, "c", later)
	held := map[string]uint64{}
	for range 3 {
		p, _ := tb.assign([][]byte{[]byte("client")}, []byte("body"), now)
		held[p.server] = p.seq
	}
	gone, _, lost := tb.expire(later)
	if len(gone) != 1 || gone[0] != "b" {
		t.Fatalf("gone = %v, want [b]", gone)
	}
	if len(lost) != 1 || lost[0].seq != held["b"] {
		t.Fatalf("lost = %v, want the request held by b", lost)
	}
	got = nil
	for range 4 {
		p, _ := tb.assign(nil, nil, later)
		got = append(got, p.server)
	}
	for _, s := range got {
		if s == "b" {
			t.Fatalf("request sent to dead server: %v", got)
		}
	}
}

func TestTableRequestDeadline(t *testing.T) {
	now := time.Unix(0, 0)
	tb := newTable(time.Hour, 2*time.Second)
	hb(tb, "a", now)
	p, _ := tb.assign(nil, nil, now)
	if _, _, lost := tb.expire(now.Add(time.Second)); len(lost) != 0 {
		t.Fatal("request lost before its deadline")
	}
	_, _, lost := tb.expire(now.Add(3 * time.Second))
	if len(lost) != 1 || lost[0].seq != p.seq {
		t.Fatalf("lost = %v", lost)
	}
	if _, ok := tb.complete(p.seq); ok {
		t.Fatal("a late reply completed an expired request")
	}
}

// hb is a heartbeat of server id, whose name is id without what follows
// its last "-".
func hb(tb *table, id string, now time.Time) bool {
	name := id
	if i := strings.LastIndex(id, "-"); i > 0 {
		name = id[:i]
	}
	joined, _ := tb.heard(id, name, true, now)
	return joined
}

// Issue 9: a server that says goodbye gets no more requests at once, and
// has the server timeout to answer what it holds; its heartbeats (one may
// be on its way) do not bring it back.
func TestTableGoodbye(t *testing.T) {
	now := time.Unix(0, 0)
	tb := newTable(3*time.Second, 10*time.Second)
	hb(tb, "a-1", now)
	hb(tb, "b-1", now)
	held, _ := tb.assign(nil, nil, now) // to a-1
	if held.server != "a-1" {
		t.Fatalf("first request to %s", held.server)
	}
	if !tb.bye("a-1", now) {
		t.Fatal("goodbye of a known server not taken")
	}
	hb(tb, "a-1", now)
	for range 4 {
		if p, _ := tb.assign(nil, nil, now); p.server != "b-1" {
			t.Fatalf("request to %s after its goodbye", p.server)
		}
	}
	if _, _, lost := tb.expire(now.Add(time.Second)); len(lost) != 0 {
		t.Fatalf("lost %v: a server that said goodbye still answers what it holds", lost)
	}
	if _, ok := tb.complete(held.seq); !ok {
		t.Fatal("the reply of a server that said goodbye was refused")
	}
}

// Issue 9: a server whose connection closes is taken out at once, its
// requests are lost after the grace period, and a message of it still on
// its way does not bring it back; a new connection under the same
// identity does.
func TestTableDisconnect(t *testing.T) {
	now := time.Unix(0, 0)
	tb := newTable(3*time.Second, 10*time.Second)
	tb.connected("a-1", "DEALER", 1, now)
	hb(tb, "a-1", now)
	hb(tb, "b-1", now)
	held, _ := tb.assign(nil, nil, now)
	if !tb.disconnected("a-1", 1, now) {
		t.Fatal("disconnect of a live server not taken")
	}
	if got := tb.live(); len(got) != 1 || got[0] != "b-1" {
		t.Fatalf("live %v after a-1 disconnected", got)
	}
	if hb(tb, "a-1", now) {
		t.Fatal("a late heartbeat brought a disconnected server back")
	}
	_, _, lost := tb.expire(now.Add(tb.grace + time.Millisecond))
	if len(lost) != 1 || lost[0].seq != held.seq {
		t.Fatalf("lost %v, want the request a-1 held, after the grace period", lost)
	}
	// An older connection closing does not take out a newer one.
	tb.connected("a-1", "DEALER", 2, now)
	if !hb(tb, "a-1", now) {
		t.Fatal("a new connection under the identity did not rejoin")
	}
	if tb.disconnected("a-1", 1, now) || len(tb.live()) != 2 {
		t.Fatalf("the close of an old connection took out the new one: %v", tb.live())
	}
}

// Issue 9: a server that restarts (a new connection, a new identity, the
// same name) replaces its old connection at once.
func TestTableRestartReplacesOldConnection(t *testing.T) {
	now := time.Unix(0, 0)
	tb := newTable(3*time.Second, 10*time.Second)
	hb(tb, "a-1", now)
	hb(tb, "b-1", now)
	held, _ := tb.assign(nil, nil, now)
	joined, replaced := tb.heard("a-2", "a", true, now)
	if !joined || len(replaced) != 1 || replaced[0] != "a-1" {
		t.Fatalf("joined %v, replaced %v", joined, replaced)
	}
	if got := join(tb.live()); got != "b-1a-2" {
		t.Fatalf("live %s", got)
	}
	_, _, lost := tb.expire(now.Add(tb.grace + time.Millisecond))
	if len(lost) != 1 || lost[0].seq != held.seq {
		t.Fatalf("lost %v, want the request of the replaced connection", lost)
	}
}

// Issue 9: a REP server (a standard server: no heartbeats) joins when it
// connects, stays while it answers, is taken out when it holds a request
// for the server timeout with no answer, and is tried again after as long.
func TestTableREPServerLiveness(t *testing.T) {
	now := time.Unix(0, 0)
	tb := newTable(3*time.Second, 10*time.Second)
	hb(tb, "ours-1", now)
	if !tb.connected("rep", "REP", 1, now) {
		t.Fatal("REP server not added on connect")
	}
	if tb.connected("dealer", "DEALER", 2, now) || len(tb.live()) != 2 {
		t.Fatalf("a DEALER joined before it sent anything: %v", tb.live())
	}
	if got := tb.heartbeatTargets(); len(got) != 1 || got[0] != "ours-1" {
		t.Fatalf("heartbeats to %v, want ours only", got)
	}
	// Answers in time: live. (Silence alone never takes a REP out.)
	later := now.Add(10 * time.Second)
	hb(tb, "ours-1", later)
	p1, _ := tb.assign(nil, nil, later)
	p2, _ := tb.assign(nil, nil, later)
	rep := p1
	if p2.rep {
		rep = p2
	}
	if !rep.rep || rep.server != "rep" {
		t.Fatalf("requests went to %s and %s", p1.server, p2.server)
	}
	tb.complete(p1.seq)
	tb.complete(p2.seq)
	tb.heard("rep", "", false, later.Add(time.Second))
	hb(tb, "ours-1", later.Add(5*time.Second))
	if gone, _, _ := tb.expire(later.Add(5 * time.Second)); len(gone) != 0 {
		t.Fatalf("gone %v", gone)
	}
	// Holds a request 3 s with no answer: out, and the request lost.
	at := later.Add(5 * time.Second)
	hb(tb, "ours-1", at)
	var stuck *pending
	for stuck == nil {
		if p, _ := tb.assign(nil, nil, at); p.rep {
			stuck = p
		}
	}
	hb(tb, "ours-1", at.Add(3*time.Second))
	gone, _, lost := tb.expire(at.Add(3*time.Second + time.Millisecond))
	if len(gone) != 1 || gone[0] != "rep" || len(lost) == 0 || !slices.ContainsFunc(lost, func(p *pending) bool { return p.seq == stuck.seq }) {
		t.Fatalf("gone %v lost %v", gone, lost)
	}
	if tb.live()[0] != "ours-1" || len(tb.live()) != 1 {
		t.Fatalf("live %v", tb.live())
	}
	// Tried again after another server timeout.
	hb(tb, "ours-1", at.Add(6*time.Second))
	_, back, _ := tb.expire(at.Add(6*time.Second + 2*time.Millisecond))
	if len(back) != 1 || len(tb.live()) != 2 {
		t.Fatalf("back %v, live %v", back, tb.live())
	}
	// A REP that lost the envelope: its reply answers its oldest request.
	a, _ := tb.assign(nil, nil, at)
	b, _ := tb.assign(nil, nil, at)
	first := a
	if !a.rep {
		first = b
	}
	if p, ok := tb.completeOldest("rep"); !ok || p.seq != first.seq {
		t.Fatalf("completeOldest = %v %v, want %d", p, ok, first.seq)
	}
	// Its connection closes: out at once.
	if !tb.disconnected("rep", 1, at) || len(tb.live()) != 1 {
		t.Fatalf("live %v after the REP disconnected", tb.live())
	}
}

func join(s []string) string {
	out := ""
	for _, x := range s {
		out += x
	}
	return out
}

// Writes go to the server that says it leads; reads stay round-robin; a
// leader that is gone or no longer leads gets no special treatment.
func TestTableWritesGoToTheLeader(t *testing.T) {
	now := time.Unix(0, 0)
	tb := newTable(3*time.Second, 10*time.Second)
	for _, s := range []string{"a", "b", "c"} {
		hb(tb, s, now)
	}
	tb.leads("c", true)
	write := proto.Envelope{Service: proto.Publish, Data: proto.Data{}}.Encode()
	read := proto.Envelope{Service: proto.History, Data: proto.Data{}}.Encode()
	var writes, reads []string
	for range 3 {
		p, _ := tb.assign(nil, write, now)
		writes = append(writes, p.server)
		p, _ = tb.assign(nil, read, now)
		reads = append(reads, p.server)
	}
	if join(writes) != "ccc" {
		t.Errorf("writes went to %v, want all to the leader c", writes)
	}
	if join(reads) != "abc" {
		t.Errorf("reads went to %v, want round-robin", reads)
	}
	tb.leads("c", false)
	p, _ := tb.assign(nil, write, now)
	p2, _ := tb.assign(nil, write, now)
	if p.server == p2.server {
		t.Errorf("with no leader, writes are not spread: %s, %s", p.server, p2.server)
	}
}
