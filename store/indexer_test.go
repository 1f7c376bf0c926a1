package store

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// TestIndexRows: the indexer inserts rows many per statement; one
// transaction of several hundred entries, with other kinds among the
// messages and repeated keys, ids and LSNs, leaves what inserting them
// one by one in log order does.
func TestIndexRows(t *testing.T) {
	s, _ := openTest(t)
	e, done := s.engine()
	defer done()
	now := time.Now().UnixMilli() // request keys older than RequestKeyTTL are pruned
	var entries []*entry
	add := func(en *entry) {
		if _, err := appendFrame(nil, en); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, en)
	}
	add(&entry{LSN: 1, Kind: entryChannel, Name: "c0", User: "ana", TS: 1})
	for i := range 300 { // LSNs 2..301, ids 1..300
		en := &entry{LSN: uint64(2 + i), Kind: entryPost, ID: int64(1 + i), User: "ana", Name: "c0", Text: fmt.Sprint("p", i), TS: 2, Clock: uint64(i)}
		if i%3 == 0 {
			en.Key, en.HasKey, en.Reply, en.KeyTS = "k"+strconv.Itoa(i%60), true, []byte(fmt.Sprint("r", i)), now+int64(i)
		}
		add(en)
		if i == 140 {
			add(&entry{LSN: 1000, Kind: entryLogin, User: "bia", TS: 3}) // an LSN that comes again below
		}
	}
	add(&entry{LSN: 302, Kind: entryDirect, ID: 301, User: "bia", To: "ana", Text: "dm", TS: 4, Clock: 400})
	add(&entry{LSN: 303, Kind: entryDirect, ID: 5, User: "bia", To: "ana", Text: "same id as p4", TS: 4, Clock: 401})
	add(&entry{LSN: 1000, Kind: entryNoop, TS: 5, Key: "k0", HasKey: true, KeyTS: now + 999})
	if err := e.index(entries); err != nil {
		t.Fatal(err)
	}

	var texts []string
	rows, err := e.wdb.Query("SELECT id, coalesce(channel, recipient), text FROM messages ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		var where, text string
		if err := rows.Scan(&id, &where, &text); err != nil {
			t.Fatal(err)
		}
		texts = append(texts, fmt.Sprintf("%d %s %s", id, where, text))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 300 {
		want = append(want, fmt.Sprintf("%d c0 p%d", i+1, i)) // id 5 stays p4: INSERT OR IGNORE
	}
	want = append(want, "301 ana dm")
	if !slices.Equal(texts, want) {
		t.Errorf("messages:\n%v\nwant\n%v", texts, want)
	}

	var logRows, maxLSN int64
	var kind string
	if err := e.wdb.QueryRow("SELECT count(*), max(lsn) FROM log").Scan(&logRows, &maxLSN); err != nil {
		t.Fatal(err)
	}
	var raw []byte
	if err := e.wdb.QueryRow("SELECT entry FROM log WHERE lsn = 1000").Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var last entry
	if err := msgpack.Unmarshal(raw, &last); err != nil {
		t.Fatal(err)
	}
	kind = last.Kind
	if logRows != 304 || maxLSN != 1000 || kind != entryNoop { // INSERT OR REPLACE: the last entry 1000 wins
		t.Errorf("log: %d rows up to %d, entry 1000 a %s; want 304 rows up to 1000, entry 1000 a noop", logRows, maxLSN, kind)
	}

	var keys int64
	var reply []byte
	var keyTS int64
	if err := e.wdb.QueryRow("SELECT count(*) FROM requests").Scan(&keys); err != nil {
		t.Fatal(err)
	}
	if err := e.wdb.QueryRow("SELECT reply, created_ms FROM requests WHERE request_key = 'k0'").Scan(&reply, &keyTS); err != nil {
		t.Fatal(err)
	}
	if keys != 20 || string(reply) != "" || keyTS != now+999 { // the last of k0 wins: the noop's
		t.Errorf("requests: %d keys, k0 = %q at %d; want 20 keys, k0 = \"\" at 999", keys, reply, keyTS)
	}
	var k57 string
	if err := e.wdb.QueryRow("SELECT reply FROM requests WHERE request_key = 'k57'").Scan(&k57); err != nil || k57 != "r297" {
		t.Errorf("k57 = %q, %v; want r297 (its last)", k57, err)
	}

	var logins, users, channels int64
	if err := e.wdb.QueryRow("SELECT (SELECT count(*) FROM logins WHERE user = 'bia'), (SELECT count(*) FROM users), (SELECT count(*) FROM channels)").Scan(&logins, &users, &channels); err != nil {
		t.Fatal(err)
	}
	if logins != 1 || users != 1 || channels != 1 {
		t.Errorf("%d logins of bia, %d users, %d channels; want 1 each", logins, users, channels)
	}
}

// BenchmarkIndex measures the indexer alone: one SQLite transaction of
// posts (with request keys: as the server's), large as under load or
// small as when it is light.
func BenchmarkIndex(b *testing.B) {
	for _, size := range []int{1000, 100, 10} {
		for _, keys := range []bool{false, true} {
			b.Run(fmt.Sprintf("entries=%d/keys=%v", size, keys), func(b *testing.B) {
				s, _ := openTest(b)
				e, done := s.engine()
				defer done()
				lsn := uint64(0)
				batch := func() []*entry {
					entries := make([]*entry, size)
					for i := range entries {
						lsn++
						en := &entry{LSN: lsn, Kind: entryPost, ID: int64(lsn), User: "ana", Name: "c0", Text: "benchmark message", TS: 1, Clock: lsn}
						if keys {
							en.Key, en.HasKey, en.Reply, en.KeyTS = "ana/"+strconv.FormatUint(lsn, 10), true, []byte(`{"ok":true}`), 1
						}
						if _, err := appendFrame(nil, en); err != nil {
							b.Fatal(err)
						}
						entries[i] = en
					}
					return entries
				}
				for b.Loop() {
					b.StopTimer()
					entries := batch()
					b.StartTimer()
					if err := e.index(entries); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/entry")
			})
		}
	}
}
