package election

import (
	"errors"
	"fmt"
	"time"
)

// Config holds who this server is and every timeout of the algorithm.
// The timeouts are configuration, never constants in the code, so that
// tests and the simulator can choose them.
type Config struct {
	Self string // this server's name
	Rank int    // this server's rank (higher wins)

	// AnswerTimeout is how long an election waits for an OK from a
	// higher rank before this server declares itself coordinator.
	AnswerTimeout time.Duration
	// AnnounceTimeout is how long, after an OK, this server waits for the
	// winner's announcement before it starts the election over.
	AnnounceTimeout time.Duration
	// CoordinatorTimeout is how long a coordinator may stay silent before
	// it is taken for dead and an election starts.
	CoordinatorTimeout time.Duration
	// AnnounceInterval is how often a coordinator re-announces itself, so
	// that servers that join later (or were cut off) learn who it is.
	AnnounceInterval time.Duration
}

// DefaultConfig returns the configuration of server self with the given
// rank and the default timeouts.
func DefaultConfig(self string, rank int) Config {
	return Config{
		Self:               self,
		Rank:               rank,
		AnswerTimeout:      400 * time.Millisecond,
		AnnounceTimeout:    1500 * time.Millisecond,
		CoordinatorTimeout: time.Second,
		AnnounceInterval:   time.Second,
	}
}

// Validate reports the first problem of the configuration, or nil.
func (c Config) Validate() error {
	if c.Self == "" {
		return errors.New("election: Self (the server's name) is empty")
	}
	timeouts := []struct {
		name  string
		value time.Duration
	}{
		{"AnswerTimeout", c.AnswerTimeout},
		{"AnnounceTimeout", c.AnnounceTimeout},
		{"CoordinatorTimeout", c.CoordinatorTimeout},
		{"AnnounceInterval", c.AnnounceInterval},
	}
	for _, t := range timeouts {
		if t.value <= 0 {
			return fmt.Errorf("election: %s must be positive, got %v", t.name, t.value)
		}
	}
	return nil
}
