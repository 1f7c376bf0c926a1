package bot

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: each power of two is split into
// 2^subBits buckets, so a recorded value is known to within 1/2^subBits
// (about 3%).
const subBits = 5

// histogram counts durations in logarithmic buckets, as HDR histograms do:
// constant memory (about 15 KiB) however long the run, percentiles to
// within about 3%. It is not safe for concurrent use.
type histogram struct {
	counts   [(65 - subBits) << subBits]int64
	total    int64
	min, max time.Duration
}

// record adds one duration (negative ones count as 0).
func (h *histogram) record(d time.Duration) {
	d = max(d, 0)
	h.counts[bucket(uint64(d))]++
	if h.total == 0 || d < h.min {
		h.min = d
	}
	h.max = max(h.max, d)
	h.total++
}

// percentile returns the duration below which the fraction q (0 to 1) of
// the recorded durations fall; 0 when nothing was recorded.
func (h *histogram) percentile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := max(1, int64(math.Ceil(q*float64(h.total))))
	var seen int64
	for b, n := range h.counts {
		if seen += n; seen >= rank {
			return min(max(time.Duration(middle(b)), h.min), h.max)
		}
	}
	return h.max
}

// bucket returns the bucket of v. Values below 2^(subBits+1) have a bucket
// each; above, a bucket holds the values sharing their top subBits+1 bits.
func bucket(v uint64) int {
	if v < 2<<subBits {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1
	return shift<<subBits + int(v>>shift)
}

// middle returns the value in the middle of bucket b, the inverse of
// bucket.
func middle(b int) uint64 {
	if b < 2<<subBits {
		return uint64(b)
	}
	shift := b>>subBits - 1
	low := uint64(b-shift<<subBits) << shift
	return low + (uint64(1)<<shift)/2
}
