package broker

import (
	"testing"
	"time"
)

func TestTableRoundRobinOverLiveServersOnly(t *testing.T) {
	now := time.Unix(0, 0)
	tb := newTable(3*time.Second, 10*time.Second)
	if _, ok := tb.assign(nil, nil, now); ok {
		t.Fatal("assigned a request with no server alive")
	}
	tb.heard("a", now)
	tb.heard("b", now)
	tb.heard("c", now)
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
	tb.heard("a", later)
	tb.heard("c", later)
	held := map[string]uint64{}
	for range 3 {
		p, _ := tb.assign([][]byte{[]byte("client")}, []byte("body"), now)
		held[p.server] = p.seq
	}
	gone, lost := tb.expire(later)
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
	tb.heard("a", now)
	p, _ := tb.assign(nil, nil, now)
	if _, lost := tb.expire(now.Add(time.Second)); len(lost) != 0 {
		t.Fatal("request lost before its deadline")
	}
	_, lost := tb.expire(now.Add(3 * time.Second))
	if len(lost) != 1 || lost[0].seq != p.seq {
		t.Fatalf("lost = %v", lost)
	}
	if _, ok := tb.complete(p.seq); ok {
		t.Fatal("a late reply completed an expired request")
	}
}

func join(s []string) string {
	out := ""
	for _, x := range s {
		out += x
	}
	return out
}
