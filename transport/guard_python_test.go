package transport

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

// Two libzmq REQ clients, both with requests in flight at once, against a
// zmq4 ROUTER that echoes: each must get its own replies.
const pyTwoReq = `
import sys, zmq
addr, n = sys.argv[1], int(sys.argv[2])
ctx = zmq.Context()
socks = []
for name in ("A", "B"):
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 3000)
    s.connect(addr)
    socks.append((name, s))
bad = 0
for i in range(n):
    for name, s in socks:
        s.send(("%s-%d" % (name, i)).encode())
    for name, s in socks:
        try:
            got = s.recv().decode()
        except zmq.Again:
            print("TIMEOUT", name, i); sys.exit(1)
        if got != "%s-%d" % (name, i):
            bad += 1
            if bad < 5: print("MIX", name, i, got)
print("OK" if bad == 0 else "BAD %d" % bad)
`

func TestGuardPythonTwoREQ(t *testing.T) {
	py := requirePython(t)
	r := echoRouter(t)
	out, err := runPython(t, py, 30*time.Second, pyTwoReq, "tcp://"+sockAddr(r), "200")
	if err != nil || !strings.HasSuffix(out, "OK") {
		t.Fatalf("python REQ clients: %v\n%s", err, out)
	}
}

// A libzmq REQ that idles is PINGed by the guard and answers; libzmq's own
// heartbeats (PING with HEARTBEAT_IVL, timeout if no answer) are answered by
// the guard. The connection must survive the idle period: same identity.
const pyIdleReq = `
import sys, time, zmq
addr, idle = sys.argv[1], float(sys.argv[2])
ctx = zmq.Context()
s = ctx.socket(zmq.REQ)
s.setsockopt(zmq.LINGER, 0)
s.setsockopt(zmq.RCVTIMEO, 3000)
s.setsockopt(zmq.HEARTBEAT_IVL, 250)
s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 1000)
s.connect(addr)
for i in range(2):
    s.send(b"py-%d" % i)
    print(s.recv().decode())
    if i == 0:
        time.sleep(idle)
print("OK")
`

func TestGuardPythonIdleREQ(t *testing.T) {
	py := requirePython(t)
	cfg := shortHeartbeats(t)
	before := Stats()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := zmq4.NewRouter(ctx, zmq4.WithLogger(quietTestLogger()))
	defer r.Close()
	if err := r.Listen(Scheme + "://127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ids := make(chan string, 4)
	go func() {
		for {
			msg, err := r.Recv()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			ids <- fmt.Sprintf("%x", msg.Frames[0])
			_ = r.Send(msg)
		}
	}()
	idle := 3 * cfg.HeartbeatTimeout
	out, err := runPython(t, py, 30*time.Second, pyIdleReq, "tcp://"+sockAddr(r), fmt.Sprint(idle.Seconds()))
	if err != nil || !strings.HasSuffix(out, "OK") {
		t.Fatalf("python REQ: %v\n%s", err, out)
	}
	a, b := <-ids, <-ids
	if a != b {
		t.Fatalf("libzmq peer reconnected while idle (identities %s, %s)", a, b)
	}
	if len(a) != 10 || a[:2] != "00" {
		t.Errorf("identity %s is not a generated 0x00+4-byte one", a)
	}
	s := Stats()
	if s.PongsReceived == before.PongsReceived {
		t.Errorf("libzmq did not answer the guard's PING: %+v", s)
	}
	if s.PingsAnswered == before.PingsAnswered {
		t.Errorf("guard did not answer libzmq's PING: %+v", s)
	}
	if s.HeartbeatTimeouts != before.HeartbeatTimeouts {
		t.Errorf("heartbeat timeout on a healthy libzmq peer: %+v", s)
	}
}

// The dial side: a zmq4 REQ over gtcp to a libzmq ROUTER, idle in between.
const pyRouterEcho = `
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.ROUTER)
s.setsockopt(zmq.LINGER, 0)
s.bind("tcp://127.0.0.1:*")
print(s.getsockopt(zmq.LAST_ENDPOINT).decode(), flush=True)
for i in range(int(sys.argv[1])):
    m = s.recv_multipart()
    print("ID", m[0].hex(), flush=True)
    s.send_multipart(m)
`

func TestGuardPythonRouterDialedIdle(t *testing.T) {
	py := requirePython(t)
	cfg := shortHeartbeats(t)
	before := Stats()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-c", pyRouterEcho, "2")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() {
		t.Fatal("python ROUTER did not start")
	}
	ep := strings.TrimPrefix(lines.Text(), "tcp://")

	req := zmq4.NewReq(ctx, zmq4.WithLogger(quietTestLogger()))
	defer req.Close()
	if err := req.Dial(Scheme + "://" + ep); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := 0; i < 2; i++ {
		if err := req.Send(zmq4.NewMsgString("go")); err != nil {
			t.Fatal(err)
		}
		if _, err := req.Recv(); err != nil {
			t.Fatal(err)
		}
		if !lines.Scan() {
			t.Fatal("python ROUTER died")
		}
		ids = append(ids, lines.Text())
		if i == 0 {
			time.Sleep(3 * cfg.HeartbeatTimeout)
		}
	}
	if ids[0] != ids[1] {
		t.Fatalf("connection replaced while idle: %v", ids)
	}
	s := Stats()
	if s.PongsReceived == before.PongsReceived {
		t.Errorf("libzmq ROUTER did not answer PING: %+v", s)
	}
	if s.HeartbeatTimeouts != before.HeartbeatTimeouts {
		t.Errorf("heartbeat timeout on a healthy libzmq peer: %+v", s)
	}
}

// libzmq SUB <- guarded XPUB: subscriptions and messages flow both ways.
const pySub = `
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.SUB)
s.setsockopt(zmq.LINGER, 0)
s.setsockopt(zmq.RCVTIMEO, 5000)
s.setsockopt(zmq.SUBSCRIBE, b"news")
s.connect(sys.argv[1])
n = 0
while n < 3:
    m = s.recv()
    if not m.startswith(b"news"):
        print("FILTER BROKEN", m); sys.exit(1)
    n += 1
print("OK")
`

func TestGuardPythonSubscriber(t *testing.T) {
	py := requirePython(t)
	x := xpubSocket(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			_ = x.Send(zmq4.NewMsgString("other"))
			_ = x.Send(zmq4.NewMsgString("news!"))
		}
	}()
	out, err := runPython(t, py, 30*time.Second, pySub, "tcp://"+sockAddr(x))
	done <- struct{}{}
	if err != nil || !strings.HasSuffix(out, "OK") {
		t.Fatalf("python SUB: %v\n%s", err, out)
	}
}
