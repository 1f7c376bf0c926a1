package clock

import (
	"maps"
	"slices"
	"testing"
	"time"
)

// base is the coordinator's clock when it sends its requests.
var base = time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)

// ms is n milliseconds.
func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// poll simulates asking a server whose clock is skew ahead of the
// coordinator's: the request takes out to arrive, the server reads its
// clock at once, and the reply takes back to return.
func poll(server string, skew, out, back time.Duration) Reading {
	return Reading{
		Server:   server,
		Sent:     base,
		Received: base.Add(out + back),
		Remote:   base.Add(out + skew),
	}
}

// self is the coordinator's own reading: Sent == Received == Remote.
func self(server string) Reading {
	return Reading{Server: server, Sent: base, Received: base, Remote: base}
}

// requireClocksAgree fails unless, after every server adds its
// adjustment to its clock (true skew + adjustment), all clocks read the
// same time within tolerance.
func requireClocksAgree(t *testing.T, skews map[string]time.Duration, round Round, tolerance time.Duration) {
	t.Helper()
	var after []time.Duration
	for server, skew := range skews {
		adjustment, ok := round.Adjustments[server]
		if !ok {
			t.Fatalf("%s got no adjustment: %+v", server, round)
		}
		after = append(after, skew+adjustment)
	}
	if spread := slices.Max(after) - slices.Min(after); spread > tolerance {
		t.Fatalf("after adjusting, the clocks are %v apart (more than %v): %+v", spread, tolerance, round)
	}
}

func TestBerkeleyThreeSkewedClocksAgree(t *testing.T) {
	skews := map[string]time.Duration{"coord": 0, "a": ms(-900), "b": ms(700)}
	// Small round trips, not quite symmetric, as on a real network.
	readings := []Reading{
		self("coord"),
		poll("a", skews["a"], 1200*time.Microsecond, 800*time.Microsecond),
		poll("b", skews["b"], 800*time.Microsecond, 1200*time.Microsecond),
	}
	round := Berkeley(readings, DefaultBerkeleyConfig())
	requireClocksAgree(t, skews, round, time.Millisecond)
	if len(round.Excluded) != 0 || len(round.Unusable) != 0 {
		t.Fatalf("nothing should be left out: %+v", round)
	}
}

func TestBerkeleyHalvesTheRoundTrip(t *testing.T) {
	// The server is truly 4.95s ahead. The request takes 150ms, the reply
	// 50ms: the coordinator sees a 200ms round trip.
	//
	//	Sent     12:00:00.000 (coordinator's clock)
	//	Remote   12:00:05.100 (server's clock: 0.150 + 4.950)
	//	Received 12:00:00.200 (coordinator's clock)
	//
	// Offset = Remote + round trip/2 - Received = 5.100 + 0.100 - 0.200 = 5.000s.
	// Without the halving it would be 4.900s. The estimate is 50ms off the
	// true 4.95s: half the asymmetry (150-50)/2, never more than half the
	// round trip.
	trueSkew := ms(4950)
	r := poll("server", trueSkew, ms(150), ms(50))
	round := Berkeley([]Reading{r}, DefaultBerkeleyConfig())
	if got, want := round.Offsets["server"], ms(5000); got != want {
		t.Fatalf("offset = %v, want %v", got, want)
	}
	if err := (round.Offsets["server"] - trueSkew).Abs(); err > ms(200)/2 {
		t.Fatalf("estimate is %v off, more than half the round trip", err)
	}
}

func TestBerkeleyOutlierIsExcludedButPulledIn(t *testing.T) {
	skews := map[string]time.Duration{"coord": 0, "a": ms(-900), "b": ms(600), "broken": time.Hour}
	readings := []Reading{self("coord")}
	for _, server := range []string{"a", "b", "broken"} {
		readings = append(readings, poll(server, skews[server], ms(5), ms(5)))
	}
	round := Berkeley(readings, DefaultBerkeleyConfig())

	// Offsets -900ms, 0, 600ms, 1h: the median is (0+600)/2 = 300ms, and
	// only the hour is more than 2s from it.
	if !slices.Equal(round.Excluded, []string{"broken"}) {
		t.Fatalf("excluded = %v, want [broken]", round.Excluded)
	}
	// Average of the other three: (-900 + 0 + 600) / 3 = -100ms.
	if round.Average != ms(-100) {
		t.Fatalf("average = %v, want -100ms (the hour must not count)", round.Average)
	}
	if got, want := round.Adjustments["broken"], ms(-100)-time.Hour; got != want {
		t.Fatalf("outlier's adjustment = %v, want %v", got, want)
	}
	requireClocksAgree(t, skews, round, 0)
}

func TestBerkeleyUnusableReadingsGetNoAdjustment(t *testing.T) {
	readings := []Reading{
		self("coord"),
		{Server: "mute", Sent: base, Received: base.Add(ms(10))}, // no time in the reply
		poll("slow", ms(300), ms(750), ms(750)),                  // 1.5s round trip
		poll("fine", ms(300), ms(5), ms(5)),
	}
	round := Berkeley(readings, DefaultBerkeleyConfig())
	if !slices.Equal(round.Unusable, []string{"mute", "slow"}) {
		t.Fatalf("unusable = %v, want [mute slow]", round.Unusable)
	}
	for _, server := range []string{"mute", "slow"} {
		if _, ok := round.Adjustments[server]; ok {
			t.Fatalf("%s got an adjustment: %+v", server, round)
		}
		if _, ok := round.Offsets[server]; ok {
			t.Fatalf("%s got an offset: %+v", server, round)
		}
	}
	if len(round.Adjustments) != 2 {
		t.Fatalf("adjustments = %v, want coord and fine only", round.Adjustments)
	}
}

func TestBerkeleyCoordinatorAlone(t *testing.T) {
	round := Berkeley([]Reading{self("coord")}, DefaultBerkeleyConfig())
	want := map[string]time.Duration{"coord": 0}
	if !maps.Equal(round.Adjustments, want) || len(round.Excluded) != 0 || len(round.Unusable) != 0 {
		t.Fatalf("round = %+v, want only a zero adjustment for coord", round)
	}
}

func TestBerkeleyNoReadings(t *testing.T) {
	round := Berkeley(nil, DefaultBerkeleyConfig())
	if len(round.Adjustments) != 0 || len(round.Offsets) != 0 || round.Adjustments == nil {
		t.Fatalf("round = %+v, want empty (non-nil) maps", round)
	}
}

// TestBerkeleyByHand has examples with round numbers to check on paper.
// Times are milliseconds after the coordinator's base time; the default
// bounds apply (MaxDeviation 2000ms, MaxRoundTrip 1000ms).
func TestBerkeleyByHand(t *testing.T) {
	// at builds a reading from sent, received and remote in milliseconds.
	at := func(server string, sent, received, remote int) Reading {
		return Reading{Server: server, Sent: base.Add(ms(sent)), Received: base.Add(ms(received)), Remote: base.Add(ms(remote))}
	}
	// noTime builds a reading whose reply carried no time.
	noTime := func(server string, sent, received int) Reading {
		return Reading{Server: server, Sent: base.Add(ms(sent)), Received: base.Add(ms(received))}
	}
	type durations = map[string]time.Duration

	tests := []struct {
		name        string
		readings    []Reading
		offsets     durations
		median      time.Duration
		average     time.Duration
		adjustments durations
		excluded    []string
		unusable    []string
	}{
		{
			// a: 2050 + 100/2 - 100 = 2000; b: -780 + 40/2 - 40 = -800.
			// Median 0; a is exactly 2000 away, which still counts.
			// Average (0 + 2000 - 800) / 3 = 400.
			name:        "an offset exactly MaxDeviation away still counts",
			readings:    []Reading{at("c", 0, 0, 0), at("a", 0, 100, 2050), at("b", 0, 40, -780)},
			offsets:     durations{"c": 0, "a": ms(2000), "b": ms(-800)},
			median:      0,
			average:     ms(400),
			adjustments: durations{"c": ms(400), "a": ms(-1600), "b": ms(1200)},
		},
		{
			// a: 320 + 10 - 30 = 300; b: 5020 + 10 - 30 = 5000.
			// Median 300; b is 4700 away: excluded. Average (0 + 300) / 2 = 150.
			name:        "an outlier is left out of the average",
			readings:    []Reading{at("c", 0, 0, 0), at("a", 10, 30, 320), at("b", 10, 30, 5020)},
			offsets:     durations{"c": 0, "a": ms(300), "b": ms(5000)},
			median:      ms(300),
			average:     ms(150),
			adjustments: durations{"c": ms(150), "a": ms(-150), "b": ms(-4850)},
			excluded:    []string{"b"},
		},
		{
			// Offsets 0, 400, 800, 1200: median (400 + 800) / 2 = 600,
			// everything within 2000, average 2400 / 4 = 600.
			name:        "an even count takes the mean of the two middle offsets",
			readings:    []Reading{at("c", 0, 0, 0), at("a", 0, 0, 400), at("b", 0, 0, 800), at("d", 0, 0, 1200)},
			offsets:     durations{"c": 0, "a": ms(400), "b": ms(800), "d": ms(1200)},
			median:      ms(600),
			average:     ms(600),
			adjustments: durations{"c": ms(600), "a": ms(200), "b": ms(-200), "d": ms(-600)},
		},
		{
			// Offsets 0 and 10000: median 5000, both 5000 away, so no
			// offset is averaged and the median is used instead.
			name:        "two far apart clocks meet halfway",
			readings:    []Reading{at("c", 0, 0, 0), at("a", 0, 0, 10000)},
			offsets:     durations{"c": 0, "a": ms(10000)},
			median:      ms(5000),
			average:     ms(5000),
			adjustments: durations{"c": ms(5000), "a": ms(-5000)},
			excluded:    []string{"a", "c"},
		},
		{
			// a has no time; b's round trip 1001 is too long; e's 1000 is
			// exactly the limit: 1500 + 500 - 1000 = 1000. f's reply
			// "arrived before it left" (a broken reading).
			// Offsets 0 and 1000: median 500, average 500.
			name: "unusable readings get nothing",
			readings: []Reading{
				at("c", 0, 0, 0), noTime("a", 0, 20), at("b", 0, 1001, 5000),
				at("e", 0, 1000, 1500), at("f", 50, 40, 100),
			},
			offsets:     durations{"c": 0, "e": ms(1000)},
			median:      ms(500),
			average:     ms(500),
			adjustments: durations{"c": ms(500), "e": ms(-500)},
			unusable:    []string{"a", "b", "f"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Berkeley(tt.readings, DefaultBerkeleyConfig())
			if !maps.Equal(got.Offsets, tt.offsets) {
				t.Errorf("offsets = %v, want %v", got.Offsets, tt.offsets)
			}
			if got.Median != tt.median || got.Average != tt.average {
				t.Errorf("median %v average %v, want %v %v", got.Median, got.Average, tt.median, tt.average)
			}
			if !maps.Equal(got.Adjustments, tt.adjustments) {
				t.Errorf("adjustments = %v, want %v", got.Adjustments, tt.adjustments)
			}
			if !slices.Equal(got.Excluded, tt.excluded) {
				t.Errorf("excluded = %v, want %v", got.Excluded, tt.excluded)
			}
			if !slices.Equal(got.Unusable, tt.unusable) {
				t.Errorf("unusable = %v, want %v", got.Unusable, tt.unusable)
			}
		})
	}
}

func TestBerkeleyIsDeterministic(t *testing.T) {
	readings := []Reading{
		self("c"), poll("z", time.Hour, ms(1), ms(1)), poll("y", -time.Hour, ms(1), ms(1)),
		poll("x", ms(5), ms(1), ms(1)), {Server: "w"}, {Server: "v"},
	}
	first := Berkeley(readings, DefaultBerkeleyConfig())
	for range 20 {
		slices.Reverse(readings)
		again := Berkeley(readings, DefaultBerkeleyConfig())
		if !slices.Equal(again.Excluded, first.Excluded) || !slices.Equal(again.Unusable, first.Unusable) ||
			!maps.Equal(again.Adjustments, first.Adjustments) {
			t.Fatalf("order of readings changed the round: %+v vs %+v", again, first)
		}
	}
}
