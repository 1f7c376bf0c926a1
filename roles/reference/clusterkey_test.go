package reference

import (
	"context"
	"strings"
	"testing"
	"time"

	"chat/clusterauth"
	"chat/internal/poll"
	"chat/proto"
)

const testKey = "reference-test-cluster-key-0123456789"

// Issue 11: with a cluster key, the reference answers only members. A
// plain `rank` (anyone on the network) is refused and logged, and gets no
// rank; the same request wrapped with the key gets one, in an answer
// authenticated for that request.
func TestKeyedReferenceServesMembersOnly(t *testing.T) {
	logs := &poll.Output{}
	cfg := testConfig(t.TempDir())
	cfg.ClusterKey = testKey
	r := start(t, cfg, testLog(logs))
	c := dial(t, r.Addr())

	env := request(t, c, ServiceRank, proto.Data{"user": "intruder", "addr": "tcp://10.0.0.9:5560"})
	if !isError(env) || !strings.Contains(env.Data["description"].(string), clusterauth.RequiredText) {
		t.Fatalf("plain rank: got %v, want an erro %q", env, clusterauth.RequiredText)
	}
	if !strings.Contains(logs.String(), "refused a request: it does not prove the cluster key") {
		t.Fatalf("the refusal was not logged:\n%s", logs)
	}
	if known := r.Known(); len(known) != 0 {
		t.Fatalf("the refused rank registered %v", known)
	}

	member, err := clusterauth.New(testKey, clusterauth.Config{})
	if err != nil {
		t.Fatal(err)
	}
	frame := proto.Envelope{Service: ServiceRank, Data: proto.Data{"user": "s1", "addr": "tcp://10.0.0.1:5560"}}.Stamp(time.Now(), 1).Encode()
	reply, err := member.Exchange(context.Background(), c.Do, frame)
	if err != nil {
		t.Fatal(err)
	}
	got, err := proto.Decode(reply)
	if err != nil || got.Data["rank"] == nil {
		t.Fatalf("authenticated rank: got %v, %v; want a rank", got, err)
	}

	// A member with another key is refused too.
	other, _ := clusterauth.New(testKey+"-other", clusterauth.Config{})
	reply, err = other.Exchange(context.Background(), c.Do, frame)
	if env, _ := proto.Decode(reply); err != nil || !isError(env) {
		t.Fatalf("another key: got %v, %v; want an erro", env, err)
	}
}

// Without a key the reference says, once, that the cluster runs open.
func TestOpenReferenceSaysSo(t *testing.T) {
	logs := &poll.Output{}
	start(t, testConfig(t.TempDir()), testLog(logs))
	if n := strings.Count(logs.String(), clusterauth.OpenWarning); n != 1 {
		t.Fatalf("the open-cluster warning was logged %d times, want 1:\n%s", n, logs)
	}
}
