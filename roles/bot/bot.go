// Package bot runs automatic users, as the standard describes them, and
// is the project's load generator. Each bot picks a random name, logs in,
// picks a random channel (creating one when there are few), subscribes to
// it, sends PerChannel messages there and repeats with another channel.
//
// Every bot has its own request socket, so N bots are N concurrent
// clients. The run prints a live stat line every StatsEvery and a summary
// (sent, acknowledged, errors, p50/p99 latency) when it stops.
//
// bot.go holds the configuration and the run, user.go what one bot does,
// stats.go and histogram.go the numbers.
package bot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Config configures a run. Every timeout is here.
type Config struct {
	Count          int           // bots in this process (--count)
	Servers        []string      // request endpoints, tried in turn (--server)
	Sub            string        // the broker's pub-out endpoint (--sub); "" disables subscribing
	Rate           float64       // messages per second per bot (--rate); 0: as fast as replies allow
	Duration       time.Duration // how long to run (--duration); 0: until ctx ends
	StatsEvery     time.Duration // period of the live stat line
	PerChannel     int           // messages sent to a channel before picking another
	MinChannels    int           // a bot creates a channel when fewer exist
	RequestTimeout time.Duration // how long one attempt waits for its reply
	Attempts       int           // tries per request, over all servers
	DialTimeout    time.Duration // bound on connecting to one server
	ErrorBackoff   time.Duration // pause after a failed request
	Retries        int           // resends of a request the cluster could not serve now (same request_id)
	ReconnectDelay time.Duration // pause before re-dialing the broker after losing its publications

	// Password, when set, is the password of every bot's login
	// (--password-file or CHAT_PASSWORD): each bot claims its name with
	// it and sends the login's token with its posts. "" : open names.
	Password string
}

// DefaultConfig returns the defaults of the command line.
func DefaultConfig() Config {
	return Config{
		Count:          1,
		Rate:           1, // a person's pace; the load generator uses 0
		Servers:        []string{"tcp://localhost:5555"},
		Sub:            "tcp://localhost:5558",
		StatsEvery:     5 * time.Second,
		PerChannel:     10,
		MinChannels:    3,
		RequestTimeout: 3 * time.Second,
		Attempts:       3,
		DialTimeout:    2 * time.Second,
		ErrorBackoff:   200 * time.Millisecond,
		Retries:        8,
		ReconnectDelay: 500 * time.Millisecond,
	}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Count < 1:
		return errors.New("bot: count must be at least 1 (--count)")
	case len(c.Servers) == 0:
		return errors.New("bot: a server endpoint is required (--server)")
	case c.Rate < 0:
		return errors.New("bot: rate must not be negative (--rate)")
	case c.Duration < 0:
		return errors.New("bot: duration must not be negative (--duration)")
	case c.StatsEvery <= 0:
		return errors.New("bot: the stat line period must be positive (--stats-every)")
	case c.PerChannel < 1:
		return errors.New("bot: messages per channel must be at least 1")
	case c.MinChannels < 1:
		return errors.New("bot: the minimum number of channels must be at least 1")
	case c.RequestTimeout <= 0 || c.DialTimeout <= 0 || c.ErrorBackoff <= 0 || c.ReconnectDelay <= 0:
		return errors.New("bot: timeouts and pauses must be positive")
	case c.Attempts < 1:
		return errors.New("bot: attempts must be at least 1")
	}
	for _, ep := range c.Servers {
		if ep == "" {
			return errors.New("bot: empty server endpoint in --server")
		}
	}
	return nil
}

// Run runs cfg.Count bots until cfg.Duration has passed or ctx ends,
// printing a stat line to out every cfg.StatsEvery and the summary at the
// end. It waits for every bot to stop. It fails for a bad config, and when
// the run did nothing: no request got a reply, or every one was refused.
func Run(ctx context.Context, cfg Config, out io.Writer, log *slog.Logger) (Summary, error) {
	if err := cfg.Validate(); err != nil {
		return Summary{}, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	st := &stats{start: time.Now()}
	var wg sync.WaitGroup
	for range cfg.Count {
		b := newBot(cfg, st, log)
		wg.Go(func() { b.run(ctx) })
	}
	wg.Go(func() { report(ctx, cfg.StatsEvery, st, out) })
	wg.Wait()

	sum := st.summary()
	fmt.Fprintln(out, "bots stopped:", sum)
	return sum, outcome(sum, cfg.Servers)
}

// outcome is the error of a run that did nothing (nil otherwise): nothing
// answered at servers, or the servers refused every request.
func outcome(sum Summary, servers []string) error {
	switch {
	case sum.Answered == 0:
		return fmt.Errorf("bot: nothing answered at %s: not one request got a reply (is the broker running there?)", strings.Join(servers, ", "))
	case sum.Acked == 0 && sum.Errors > 0:
		return fmt.Errorf("bot: no message was acknowledged, and %d requests failed (the log says why)", sum.Errors)
	}
	return nil
}

// report prints the live stat line every period until ctx ends.
func report(ctx context.Context, period time.Duration, st *stats, out io.Writer) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	last := Summary{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			now := st.summary()
			fmt.Fprintln(out, statLine(now, last))
			last = now
		}
	}
}
