package transport

import (
	"strings"
	"testing"
	"time"
)

// Issue 9 with libzmq itself (python3-zmq): "a libzmq client sending a
// 1 MiB publish waits forever".

const pyLargePublish = `
import sys, zmq, msgpack
addr = sys.argv[1]
ctx = zmq.Context()
s = ctx.socket(zmq.REQ)
s.setsockopt(zmq.LINGER, 0)
s.setsockopt(zmq.RCVTIMEO, 10000)
s.connect(addr)
for size in (1 << 20, (16 << 20) - 100):
    req = msgpack.packb({"service": "publish", "data": {"user": "alice", "channel": "geral", "message": "x" * size}})
    s.send(req)
    try:
        reply = msgpack.unpackb(s.recv())
    except zmq.Again:
        print("SILENCE after a request of", len(req), "bytes"); sys.exit(1)
    print(reply["data"]["status"], reply["data"]["description"])
print("OK")
`

func TestGuardPythonLargePublishAnswered(t *testing.T) {
	py := requirePython(t)
	srv := mimicServer(t)
	out, err := runPython(t, py, 60*time.Second, pyLargePublish, "tcp://"+sockAddr(srv))
	t.Logf("libzmq REQ:\n%s", out)
	if err != nil || !strings.HasSuffix(out, "OK") || strings.Count(out, "erro request is ") != 2 {
		t.Fatalf("python REQ: %v\n%s", err, out)
	}
}

// A libzmq subscriber on a quiet channel is PINGed by the guard, answers,
// and so is never closed as idle.
const pyQuietSub = `
import sys, zmq
s = zmq.Context().socket(zmq.SUB)
s.setsockopt(zmq.LINGER, 0)
s.setsockopt(zmq.RCVTIMEO, 20000)
s.connect(sys.argv[1])
s.setsockopt(zmq.SUBSCRIBE, b"quiet")
print(s.recv().decode())
print("OK")
`

func TestGuardPythonQuietSubscriberNotIdle(t *testing.T) {
	py := requirePython(t)
	cfg := withGuardConfig(t, idleTestConfig)
	f, err := ListenFanout(t.Context(), "tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	before := Stats()
	done := make(chan struct{})
	var out string
	var perr error
	go func() {
		defer close(done)
		out, perr = runPython(t, py, 30*time.Second, pyQuietSub, DialableEndpoint(f.Addr()))
	}()
	waitFor(t, 10*time.Second, "the subscription", func() bool { return fanoutHasTopic(f, "quiet") })
	time.Sleep(3 * cfg.IdleTimeout) // a quiet channel: the point of the test
	after := Stats()
	if after.IdleTimeouts != before.IdleTimeouts || after.HeartbeatTimeouts != before.HeartbeatTimeouts {
		t.Fatalf("the quiet subscriber was closed: %+v", after)
	}
	if after.PongsReceived == before.PongsReceived {
		t.Fatal("libzmq never answered a PING")
	}
	if !fanoutHasTopic(f, "quiet") {
		t.Fatal("the subscription is gone")
	}
	for {
		f.Publish([][]byte{[]byte("quiet"), []byte("still here")})
		select {
		case <-done:
			if perr != nil || !strings.HasSuffix(out, "OK") {
				t.Fatalf("python SUB: %v\n%s", perr, out)
			}
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// fanoutHasTopic reports whether a subscriber of f holds topic.
func fanoutHasTopic(f *Fanout, topic string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs {
		s.mu.RLock()
		_, ok := s.topics[topic]
		s.mu.RUnlock()
		if ok {
			return true
		}
	}
	return false
}
