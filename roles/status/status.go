// Package status is `chat status`: one screen that shows every server the
// reference lists, what each says about itself (role, the coordinator it
// follows, epoch, clock offset, Lamport clock, messages stored, log
// positions), and whether they agree on the coordinator.
//
// It asks the reference for its list, then asks every listed server, in
// parallel and each with a short timeout, the extension service "status"
// on the address the server registered. Snapshot gathers the data,
// Render draws it, and Run does both once or, with Watch, again and again.
package status

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"chat/clock"
	"chat/clusterauth"
	"chat/proto"
	"chat/roles/reference"
	"chat/transport"
)

// Service is the name of the status request servers answer.
const Service = "status"

// Config configures the status tool. Every timeout is here.
type Config struct {
	Reference        string        // the reference's endpoint
	Watch            bool          // redraw every Interval until the context ends
	Interval         time.Duration // period of the redraw with Watch
	ReferenceTimeout time.Duration // wait for the reference's list
	ServerTimeout    time.Duration // wait for one server's status reply
	DialTimeout      time.Duration // bound on connecting to one endpoint
	Clock            clock.Source  // the time shown above the table (nil: the system clock)
	// Lamport is the tool's Lamport clock, ticked before each request and
	// merged with each reply (nil: a new one for each Snapshot; Run keeps
	// one across the snapshots it takes).
	Lamport *clock.Lamport
	// ClusterKey is the cluster's key, when it has one: the reference and
	// the servers of a keyed cluster answer members only (PROTOCOL.md,
	// "Cluster key"). Empty: the cluster runs open.
	ClusterKey string
	// Member proves ClusterKey (nil: made from it for each Snapshot; Run
	// keeps one across the snapshots it takes).
	Member *clusterauth.Member
}

// DefaultConfig returns the defaults: the reference on localhost:5559.
func DefaultConfig() Config {
	return Config{
		Reference:        "tcp://localhost:5559",
		Interval:         time.Second,
		ReferenceTimeout: 2 * time.Second,
		ServerTimeout:    500 * time.Millisecond,
		DialTimeout:      500 * time.Millisecond,
	}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Reference == "":
		return errors.New("status: the reference's endpoint is required (--reference)")
	case c.Interval <= 0:
		return errors.New("status: the interval must be positive (--interval)")
	case c.ReferenceTimeout <= 0 || c.ServerTimeout <= 0 || c.DialTimeout <= 0:
		return errors.New("status: timeouts must be positive")
	}
	if _, err := clusterauth.ForKey(c.ClusterKey, clusterauth.Config{}); err != nil {
		return fmt.Errorf("status: --cluster-key: %w", err)
	}
	return nil
}

// State says whether a listed server answered.
type State string

// The states of a listed server.
const (
	Up     State = "up"      // it answered (status data, or an error if it is not ours)
	Down   State = "down"    // it did not answer within the timeout
	NoAddr State = "no addr" // it registered no address, so it cannot be asked
)

// ServerStatus is one row: what the reference lists, and what the server
// said. A nil field is a value the server did not give (or gave with the
// wrong type).
type ServerStatus struct {
	Name  string // as listed by the reference
	Rank  int
	Addr  string
	State State
	Ours  bool   // the server answered status with data (not an error)
	Note  string // why it is down, or the error it answered; "" when none
	Role  *string
	// Coordinator is the name of the server it follows ("" if it knows none).
	Coordinator *string
	Epoch       *uint64
	OffsetMs    *float64 // its Berkeley clock offset, in milliseconds
	TimeMs      *int64   // its adjusted physical clock, Unix milliseconds
	Clock       *uint64  // its Lamport clock
	Messages    *int64   // messages stored
	LSN         *uint64  // last change-log position written
	Commit      *uint64  // last position known committed
}

// Report is one snapshot of the system.
type Report struct {
	Reference string         // the reference's endpoint
	Time      time.Time      // when the snapshot was taken
	Err       string         // why the reference gave no list ("" when it did)
	Servers   []ServerStatus // by rank
}

// ErrNoServer is returned (wrapped) by Snapshot when no listed server
// answers, including when the reference lists none.
var ErrNoServer = errors.New("no server answers")

// Snapshot asks the reference for its list and every listed server for
// its status. It returns an error when the reference does not answer or
// no server answers; the Report is filled as far as it got either way.
func Snapshot(ctx context.Context, cfg Config) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	lamport := cfg.Lamport
	if lamport == nil {
		lamport = &clock.Lamport{}
	}
	src := cfg.Clock
	if src == nil {
		src = clock.System{}
	}
	if cfg.Member == nil {
		cfg.Member, _ = clusterauth.ForKey(cfg.ClusterKey, clusterauth.Config{}) // checked by Validate
	}
	rep := Report{Reference: cfg.Reference, Time: src.Now()}

	listed, err := askList(ctx, cfg, lamport, src)
	if err != nil {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		rep.Err = brief(err)
		return rep, fmt.Errorf("status: the reference %s did not answer: %s", cfg.Reference, rep.Err)
	}
	rep.Servers = make([]ServerStatus, len(listed))
	var wg sync.WaitGroup
	for i, s := range listed {
		wg.Go(func() { rep.Servers[i] = askServer(ctx, cfg, lamport, src, s) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	for _, s := range rep.Servers {
		if s.State == Up {
			return rep, nil
		}
	}
	if len(listed) == 0 {
		return rep, fmt.Errorf("status: %w: the reference lists no server", ErrNoServer)
	}
	return rep, fmt.Errorf("status: %w of the %d listed", ErrNoServer, len(listed))
}

// ask sends one request on a fresh client with one attempt.
func ask(ctx context.Context, cfg Config, lamport *clock.Lamport, src clock.Source, ep, service string, timeout time.Duration) (proto.Envelope, error) {
	c, err := transport.NewClient(transport.ClientConfig{
		Endpoints: []string{ep}, Timeout: timeout, Attempts: 1, DialTimeout: cfg.DialTimeout,
	}, nil)
	if err != nil {
		return proto.Envelope{}, err
	}
	defer c.Close()
	req := proto.Envelope{Service: service, Data: proto.Data{}}.Stamp(src.Now(), lamport.Tick()).Encode()
	b, err := cfg.Member.Exchange(ctx, c.Do, req)
	if err != nil {
		return proto.Envelope{}, err
	}
	env, err := proto.Decode(b)
	lamport.Observe(env.Data.Clock())
	if err != nil {
		return proto.Envelope{}, fmt.Errorf("%w: %v", errBadReply, err)
	}
	return env, nil
}

// askList returns the reference's list of live servers.
func askList(ctx context.Context, cfg Config, lamport *clock.Lamport, src clock.Source) ([]reference.Server, error) {
	env, err := ask(ctx, cfg, lamport, src, cfg.Reference, reference.ServiceList, cfg.ReferenceTimeout)
	if err != nil {
		return nil, err
	}
	servers, err := reference.ParseList(env.Data)
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(servers, func(a, b reference.Server) int { return a.Rank - b.Rank })
	return servers, nil
}

// askServer asks one listed server for its status.
func askServer(ctx context.Context, cfg Config, lamport *clock.Lamport, src clock.Source, s reference.Server) ServerStatus {
	st := ServerStatus{Name: s.Name, Rank: s.Rank, Addr: s.Addr}
	if s.Addr == "" {
		st.State = NoAddr
		st.Note = "registered no address"
		return st
	}
	env, err := ask(ctx, cfg, lamport, src, s.Addr, Service, cfg.ServerTimeout)
	if err != nil {
		st.State, st.Note = Down, brief(err)
		if errors.Is(err, errBadReply) {
			st.State = Up // it answered, with something we cannot read
		}
		return st
	}
	st.State = Up
	d := env.Data
	if _, ok := d["clock"]; ok {
		st.Clock = ptr(d.Clock())
	}
	if status, _, _ := d.String(env.Service, "status"); status == proto.StatusError || env.Service != Service {
		why, _, _ := d.String(env.Service, "description")
		st.Note = "answers, but not status: " + why
		return st
	}
	st.Ours = true
	st.Role = str(d, "role")
	st.Coordinator = str(d, "coordinator")
	st.Epoch = unsigned(d, "epoch")
	st.OffsetMs = float(d, "offset_ms")
	if n, ok, err := d.Int(Service, "time_ms"); ok && err == nil {
		st.TimeMs = &n
	}
	if n, ok, err := d.Int(Service, "messages"); ok && err == nil {
		st.Messages = &n
	}
	st.LSN = unsigned(d, "lsn")
	st.Commit = unsigned(d, "commit")
	return st
}

// errBadReply is a reply that is not a MessagePack envelope.
var errBadReply = errors.New("reply is not an envelope")

// brief shortens a request error for the notes under the table. A failed
// connection says why in the system's words ("connection refused"): zmq4
// formats the cause into its error without wrapping it, so it is the last
// part of the text. "no reply after 1 attempts: " says nothing with one
// attempt.
func brief(err error) string {
	msg := strings.TrimPrefix(err.Error(), transport.ErrNoReply.Error()+" after 1 attempts: ")
	if strings.HasPrefix(msg, "cannot connect to ") {
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			return "cannot connect: " + msg[i+2:]
		}
	}
	return msg
}

func ptr[T any](v T) *T { return &v }

func str(d proto.Data, key string) *string {
	if s, ok, err := d.String(Service, key); ok && err == nil {
		return &s
	}
	return nil
}

func unsigned(d proto.Data, key string) *uint64 {
	if n, ok, err := d.Int(Service, key); ok && err == nil && n >= 0 {
		return ptr(uint64(n))
	}
	return nil
}

func float(d proto.Data, key string) *float64 {
	switch v := d[key].(type) {
	case float64:
		return &v
	case float32:
		return ptr(float64(v))
	}
	if n, ok, err := d.Int(Service, key); ok && err == nil {
		return ptr(float64(n))
	}
	return nil
}

// Render draws the report: a header line, the table, and notes below it
// (the coordinator, disagreements, why servers are down).
func Render(w io.Writer, r Report) {
	fmt.Fprintf(w, "reference %s at %s\n", r.Reference, r.Time.Format("2006-01-02 15:04:05.000 MST"))
	if r.Err != "" {
		fmt.Fprintf(w, "the reference gave no list: %s\n", r.Err)
		return
	}
	if len(r.Servers) == 0 {
		fmt.Fprintln(w, "the reference lists no live server")
		return
	}
	coordinator, followers := consensus(r.Servers)
	up := 0
	for _, s := range r.Servers {
		if s.State == Up {
			up++
		}
	}
	fmt.Fprintf(w, "%d servers listed, %d answering\n\n", len(r.Servers), up)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, " \tNAME\tRANK\tADDRESS\tALIVE\tROLE\tCOORDINATOR\tEPOCH\tOFFSET_MS\tCLOCK\tMESSAGES\tLSN\tCOMMIT")
	for _, s := range r.Servers {
		mark := " "
		if coordinator != "" && s.Name == coordinator {
			mark = "*"
		}
		alive := string(s.State)
		addr := s.Addr
		if addr == "" {
			addr = "-"
		}
		missing := "?" // it answered without this value
		if s.State != Up {
			missing = "-" // it was not asked, or did not answer
		}
		cell := func(p any) string { return show(p, missing) }
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			mark, s.Name, s.Rank, addr, alive,
			cell(s.Role), cell(s.Coordinator), cell(s.Epoch), cell(s.OffsetMs),
			cell(s.Clock), cell(s.Messages), cell(s.LSN), cell(s.Commit))
	}
	tw.Flush()

	fmt.Fprintln(w)
	switch len(followers) {
	case 0:
		fmt.Fprintln(w, "no server names a coordinator")
	case 1:
		fmt.Fprintf(w, "* coordinator: %s (followed by %d of the %d answering)\n", coordinator, len(followers[coordinator]), up)
	default:
		var parts []string
		for _, c := range sortedKeys(followers) {
			who := followers[c]
			verb := "follows"
			if len(who) > 1 {
				verb = "follow"
			}
			parts = append(parts, fmt.Sprintf("%s %s %s", strings.Join(who, ", "), verb, c))
		}
		fmt.Fprintf(w, "servers disagree on the coordinator: %s (* marks %s, the most followed)\n", strings.Join(parts, "; "), coordinator)
	}
	for _, s := range r.Servers {
		if s.Note != "" {
			fmt.Fprintf(w, "%s: %s\n", s.Name, s.Note)
		}
	}
}

// consensus returns, for each coordinator named by an answering server,
// who follows it, and the most followed one (ties: the first by name). A
// leader that names no coordinator follows itself.
func consensus(servers []ServerStatus) (coordinator string, followers map[string][]string) {
	followers = map[string][]string{}
	for _, s := range servers {
		if s.State != Up {
			continue
		}
		c := ""
		if s.Coordinator != nil {
			c = *s.Coordinator
		}
		if c == "" && s.Role != nil && *s.Role == "leader" {
			c = s.Name
		}
		if c != "" {
			followers[c] = append(followers[c], s.Name)
		}
	}
	for _, c := range sortedKeys(followers) {
		if coordinator == "" || len(followers[c]) > len(followers[coordinator]) {
			coordinator = c
		}
	}
	return coordinator, followers
}

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// show formats one optional cell; missing stands for a nil value.
func show(p any, missing string) string {
	switch v := p.(type) {
	case *string:
		if v != nil {
			if *v == "" {
				return "-"
			}
			return *v
		}
	case *uint64:
		if v != nil {
			return strconv.FormatUint(*v, 10)
		}
	case *int64:
		if v != nil {
			return strconv.FormatInt(*v, 10)
		}
	case *float64:
		if v != nil {
			return fmt.Sprintf("%+.1f", *v)
		}
	}
	return missing
}

// clearScreen moves the cursor home and clears the terminal (ANSI).
const clearScreen = "\x1b[H\x1b[2J"

// Run takes a snapshot and renders it to out; with Watch it redraws every
// Interval until ctx ends (on a terminal it clears the screen first,
// otherwise snapshots are separated by a blank line). It returns the error
// of the last snapshot rendered: the reference did not answer, or no
// server did.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Member == nil {
		cfg.Member, _ = clusterauth.ForKey(cfg.ClusterKey, clusterauth.Config{})
	}
	if cfg.Lamport == nil {
		cfg.Lamport = &clock.Lamport{}
	}
	if !cfg.Watch {
		rep, err := Snapshot(ctx, cfg)
		Render(out, rep)
		return err
	}
	tty := isTerminal(out)
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	var last error
	for n := 0; ; n++ {
		rep, err := Snapshot(ctx, cfg)
		if ctx.Err() != nil {
			return last // interrupted: the partial snapshot is not drawn
		}
		last = err
		switch {
		case tty:
			io.WriteString(out, clearScreen)
		case n > 0:
			io.WriteString(out, "\n")
		}
		Render(out, rep)
		select {
		case <-ctx.Done():
			return last
		case <-tick.C:
		}
	}
}

// isTerminal reports whether w is a terminal (a character device), where
// the screen can be cleared.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
