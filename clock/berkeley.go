package clock

import (
	"maps"
	"slices"
	"time"
)

// This file holds one round of the Berkeley algorithm (Gusella & Zatti,
// 1989) as a pure function. The coordinator asks every server for its
// clock, noting on its own clock when each request left and when each
// reply arrived. From those readings it computes how far each clock is
// from its own, averages the clocks that agree with one another, and tells
// every server how much to add to its clock so that all of them read that
// average. Sending the requests and the adjustments is the caller's job.

// Reading is one server's answer to the coordinator's `clock` poll.
type Reading struct {
	Server   string
	Sent     time.Time // coordinator's clock when the request left
	Received time.Time // coordinator's clock when the reply arrived
	// Remote is the server's clock in its reply. The zero Time means the
	// reply had no time (or there was no reply): no adjustment is
	// computed for it.
	Remote time.Time
}

// BerkeleyConfig bounds which readings count.
type BerkeleyConfig struct {
	// MaxDeviation: a reading whose offset is farther than this from the
	// median offset is left out of the average (it still gets an
	// adjustment).
	MaxDeviation time.Duration
	// MaxRoundTrip: a reading whose round trip took longer is left out
	// entirely (no adjustment), since its time is too uncertain.
	MaxRoundTrip time.Duration
}

// DefaultBerkeleyConfig returns the default bounds: MaxDeviation 2s,
// MaxRoundTrip 1s.
func DefaultBerkeleyConfig() BerkeleyConfig {
	return BerkeleyConfig{MaxDeviation: 2 * time.Second, MaxRoundTrip: time.Second}
}

// Round is the outcome of one Berkeley round.
type Round struct {
	// Adjustments is what each server must add to its clock (only the
	// servers with a usable reading).
	Adjustments map[string]time.Duration
	// Offsets is each usable reading's estimated offset from the
	// coordinator's clock (positive: the server's clock is ahead).
	Offsets map[string]time.Duration
	// Median is the median of Offsets (zero when there is none).
	Median time.Duration
	// Average is the offset every clock reads after the adjustments: the
	// mean of the offsets that are not Excluded.
	Average time.Duration
	// Excluded lists, sorted, the servers left out of the average
	// (outliers). They still get an adjustment towards the average.
	Excluded []string
	// Unusable lists, sorted, the servers whose reply had no time or
	// whose round trip was too long (or negative): they get no adjustment.
	Unusable []string
}

// Berkeley computes one round from one reading per server. The coordinator
// includes itself as a Reading with Sent == Received == Remote.
//
// The steps, which a student can follow by hand:
//
//  1. Each usable reading's offset is Remote + (Received-Sent)/2 - Received:
//     the server read its clock about halfway through the round trip, so
//     when the reply arrived its clock read Remote + half the round trip.
//  2. The median of the offsets is taken (for an even count, the mean of
//     the two middle ones).
//  3. The offsets within MaxDeviation of the median are averaged. If none
//     is that close (possible only with an even count of readings that
//     split into two far groups), the median itself is the average.
//  4. Each usable server's adjustment is average - its offset, so that
//     after applying it every clock reads the average.
//
// Durations are whole nanoseconds: halving and averaging round toward zero.
func Berkeley(readings []Reading, cfg BerkeleyConfig) Round {
	round := Round{
		Adjustments: map[string]time.Duration{},
		Offsets:     map[string]time.Duration{},
	}

	// Step 1: the offset of every usable reading.
	for _, r := range readings {
		roundTrip := r.Received.Sub(r.Sent)
		if r.Remote.IsZero() || roundTrip < 0 || roundTrip > cfg.MaxRoundTrip {
			round.Unusable = append(round.Unusable, r.Server)
			continue
		}
		round.Offsets[r.Server] = r.Remote.Add(roundTrip / 2).Sub(r.Received)
	}
	slices.Sort(round.Unusable)
	if len(round.Offsets) == 0 {
		return round
	}

	// Step 2: the median offset.
	round.Median = median(round.Offsets)

	// Step 3: the average of the offsets close to the median.
	var sum time.Duration
	var count int
	for server, offset := range round.Offsets {
		if (offset - round.Median).Abs() > cfg.MaxDeviation {
			round.Excluded = append(round.Excluded, server)
			continue
		}
		sum += offset
		count++
	}
	slices.Sort(round.Excluded)
	round.Average = round.Median
	if count > 0 {
		round.Average = sum / time.Duration(count)
	}

	// Step 4: move every clock to the average.
	for server, offset := range round.Offsets {
		round.Adjustments[server] = round.Average - offset
	}
	return round
}

// median returns the median of the offsets (the mean of the two middle
// ones for an even count). offsets must not be empty.
func median(offsets map[string]time.Duration) time.Duration {
	sorted := slices.Sorted(maps.Values(offsets))
	middle := len(sorted) / 2
	if len(sorted)%2 == 1 {
		return sorted[middle]
	}
	return (sorted[middle-1] + sorted[middle]) / 2
}
