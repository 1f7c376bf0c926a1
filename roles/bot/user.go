package bot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	mathrand "math/rand/v2"
	"strings"
	"time"

	"chat/clock"
	"chat/logging"
	"chat/proto"
	"chat/roles/client"
	"chat/transport"
)

// bot is one automatic user. Only its own goroutine touches it, except
// lamport, which its subscriber's goroutine also uses (it is safe for
// concurrent use).
type bot struct {
	cfg     Config
	name    string
	log     *slog.Logger
	stats   *stats
	lamport clock.Lamport
	req     *transport.Client  // the bot's own REQ socket
	sub     *client.Subscriber // nil when cfg.Sub is ""
	channel string             // the channel it posts to now
	token   string             // the login's token, with cfg.Password ("" : an open name)
}

// newBot prepares a bot with a random name; run starts it.
func newBot(cfg Config, st *stats, log *slog.Logger) *bot {
	b := &bot{cfg: cfg, name: "bot-" + randomHex(3), stats: st}
	b.log = logging.WithClock(log, &b.lamport).With("bot", b.name) // every line shows the bot's Lamport clock
	req, err := transport.NewClient(transport.ClientConfig{
		Endpoints: cfg.Servers, Timeout: cfg.RequestTimeout, Attempts: cfg.Attempts, DialTimeout: cfg.DialTimeout,
	}, b.log)
	if err != nil {
		panic(err) // cannot happen: Config.Validate checked every field
	}
	b.req = req
	return b
}

// run logs in, then posts PerChannel messages to a random channel at a
// time, until ctx ends.
func (b *bot) run(ctx context.Context) {
	defer b.req.Close()
	if b.cfg.Sub != "" {
		b.sub = client.NewSubscriber(ctx, client.SubscriberConfig{Endpoint: b.cfg.Sub, ReconnectDelay: b.cfg.ReconnectDelay}, b.received, b.log)
		defer b.sub.Close()
	}
	var pace <-chan time.Time // nil: no rate limit
	if b.cfg.Rate > 0 {
		tick := time.NewTicker(max(time.Duration(float64(time.Second)/b.cfg.Rate), time.Microsecond))
		defer tick.Stop()
		pace = tick.C
	}

	for ctx.Err() == nil {
		if err := b.login(ctx); err == nil {
			break
		}
	}
	for ctx.Err() == nil {
		ch, err := b.pickChannel(ctx)
		if err != nil {
			continue // counted and paused for by call
		}
		b.moveTo(ch)
		for range b.cfg.PerChannel {
			if pace != nil {
				select {
				case <-ctx.Done():
				case <-pace:
				}
			}
			if ctx.Err() != nil {
				return
			}
			b.post(ctx, ch)
		}
	}
}

// login logs the bot in, with cfg.Password when set: the first login of
// its name claims it, and the reply's token goes with its posts.
func (b *bot) login(ctx context.Context) error {
	data := proto.Data{"user": b.name, "request_id": client.NewRequestID()}
	if b.cfg.Password != "" {
		data["password"] = b.cfg.Password
	}
	reply, err := b.call(ctx, proto.Login, data)
	if err != nil {
		return err
	}
	b.token, _ = reply["token"].(string)
	b.log.Debug("bot logged in", "account", b.token != "")
	return nil
}

// pickChannel returns a random existing channel, creating one first when
// there are fewer than MinChannels.
func (b *bot) pickChannel(ctx context.Context) (string, error) {
	reply, err := b.call(ctx, proto.Channels, proto.Data{})
	if err != nil {
		return "", err
	}
	channels := client.ReplyList(reply, "channels", "users")
	if len(channels) < b.cfg.MinChannels {
		name := "canal-" + randomHex(3)
		if _, err := b.call(ctx, proto.Channel, proto.Data{"channel": name, "request_id": client.NewRequestID()}); err != nil {
			return "", err
		}
		b.log.Info("bot created a channel", "channel", name)
		channels = append(channels, name)
	}
	return channels[mathrand.IntN(len(channels))], nil
}

// moveTo makes ch the bot's channel, moving its subscription there.
func (b *bot) moveTo(ch string) {
	if b.sub != nil && ch != b.channel {
		b.sub.Unsubscribe(b.channel)
		b.sub.Subscribe(ch)
	}
	b.channel = ch
}

// post sends one message to ch and records its latency when acknowledged.
// A post refused for its token (expired) is sent again after logging in
// again, once.
func (b *bot) post(ctx context.Context, ch string) {
	data := proto.Data{"user": b.name, "channel": ch, "message": randomText(), "request_id": client.NewRequestID()}
	if b.token != "" {
		data["token"] = b.token
	}
	b.stats.sent.Add(1)
	start := time.Now()
	_, err := b.call(ctx, proto.Publish, data)
	if client.TokenRefused(err) && b.login(ctx) == nil {
		data["token"] = b.token
		_, err = b.call(ctx, proto.Publish, data)
	}
	if err == nil {
		b.stats.ack(time.Since(start))
	}
}

// call sends one request. A failure (an "erro" reply, or no reply after
// every attempt) is counted and followed by a pause, so that a bot in
// trouble does not spin; the end of ctx is not a failure.
func (b *bot) call(ctx context.Context, service string, data proto.Data) (proto.Data, error) {
	reply, err := client.Call(ctx, b.req, &b.lamport, service, data)
	// A request the cluster could not serve now (an election, a server
	// dying) is sent again, with the same request_id, so it is applied once.
	backoff := 100 * time.Millisecond
	for try := 0; try < b.cfg.Retries && ctx.Err() == nil && retryable(err); try++ {
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
		reply, err = client.Call(ctx, b.req, &b.lamport, service, data)
	}
	var refused *client.ReplyError
	if err == nil || errors.As(err, &refused) {
		b.stats.answered.Add(1)
	}
	if err != nil && ctx.Err() == nil {
		b.stats.errors.Add(1)
		b.log.Warn("request failed", "service", service, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(b.cfg.ErrorBackoff):
		}
	}
	return reply, err
}

// retryable reports whether a failed request may succeed if sent again.
func retryable(err error) bool {
	var refused *client.ReplyError
	return errors.Is(err, transport.ErrNoReply) || (errors.As(err, &refused) && refused.Retry)
}

// received counts a publication of the bot's channel (subscriber
// goroutine).
func (b *bot) received(r proto.Received) {
	b.lamport.Observe(r.Clock)
	b.stats.received.Add(1)
}

// words are what random messages are made of.
var words = strings.Fields("olá oi tudo bem hoje amanhã chat canal mensagem bot teste carga " +
	"servidor relógio eleição réplica broker zeromq lamport berkeley café")

// randomText returns a message of 3 to 8 random words.
func randomText() string {
	n := 3 + mathrand.IntN(6)
	w := make([]string, n)
	for i := range w {
		w[i] = words[mathrand.IntN(len(words))]
	}
	return strings.Join(w, " ")
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
