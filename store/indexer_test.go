package store

import (
	"fmt"
	"strconv"
	"testing"
)

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
