#!/usr/bin/python3
"""Interoperability check of the chat wire protocol (shared/PROTOCOL.md).

A client written the way another team would write one: libzmq (pyzmq) REQ
sockets, MessagePack via the msgpack package, and nothing from our Go code.
It runs every check against each --req endpoint (a broker front, a server's
own listen socket, ...) and watches publications on the --sub endpoint (the
broker's XPUB).

    /usr/bin/python3 interop.py --req tcp://127.0.0.1:5555 \
        --req tcp://127.0.0.1:5560 --sub tcp://127.0.0.1:5558

Prints one line per check, "PASS name" or "FAIL name: why", lines starting
with "#" are information, and a last line "N passed, M failed". The exit
code is 0 only when every check passed.
"""

import argparse
import datetime
import secrets
import sys
import threading
import time
import traceback

import msgpack
import zmq

TIMEOUT_MS = 3000  # one request's reply timeout
HUGE_TIMEOUT_MS = 10000  # the 200 KiB request's reply timeout
ONCE_WINDOW_MS = 150  # how long to wait for a (wrong) second reply


class Timeout(Exception):
    """No reply came within the timeout."""


class CheckFailed(Exception):
    """A check found something wrong; the message says what."""


def require(cond, why):
    if not cond:
        raise CheckFailed(why)


def short(v, n=200):
    s = repr(v)
    return s if len(s) <= n else s[:n] + "..."


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def unpack(frame):
    return msgpack.unpackb(frame, raw=False, strict_map_key=False)


# ---------------------------------------------------------------------------
# Results


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.lock = threading.Lock()

    def record(self, name, why=None):
        with self.lock:
            if why is None:
                self.passed += 1
                print("PASS %s" % name, flush=True)
            else:
                self.failed += 1
                why = " ".join(str(why).split())  # one line
                print("FAIL %s: %s" % (name, why), flush=True)

    def run(self, name, fn, *args):
        """Runs one check: fn returns normally to pass, raises to fail."""
        try:
            fn(*args)
        except CheckFailed as e:
            self.record(name, e)
        except Timeout as e:
            self.record(name, "no reply: %s" % e)
        except Exception as e:  # a bug of the check itself is a failure too
            self.record(name, "%s: %s | %s" % (type(e).__name__, e,
                                              traceback.format_exc().splitlines()[-3:]))
        else:
            self.record(name)


# ---------------------------------------------------------------------------
# Request client (lazy pirate)


class Client:
    """A REQ client with a Lamport clock. A timeout closes and recreates
    the socket (lazy pirate): a REQ socket that missed a reply is stuck."""

    def __init__(self, ctx, endpoint, envelope_log):
        self.ctx = ctx
        self.endpoint = endpoint
        self.clock = 0
        self.sock = None
        self.envelope_log = envelope_log  # list of problems seen in replies
        self.replies = 0
        self._open()

    def _open(self, timeout_ms=TIMEOUT_MS):
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        self.sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
        self.sock.connect(self.endpoint)

    def close(self):
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def raw(self, frame, timeout_ms=TIMEOUT_MS):
        """Sends one frame and returns the one reply frame."""
        self.sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        try:
            self.sock.send(frame)
            reply = self.sock.recv()
        except zmq.Again:
            self._open()
            raise Timeout("%s gave no reply within %d ms" % (self.endpoint, timeout_ms))
        if self.sock.getsockopt(zmq.RCVMORE):
            self._open()
            raise CheckFailed("reply has more than one frame")
        return reply

    def request(self, service, data=None, clock="auto", timestamp="auto",
                timeout_ms=TIMEOUT_MS):
        """Sends {"service", "data"} and returns the reply envelope (a dict).
        clock/timestamp "auto" stamps them as the protocol says; None leaves
        them out; any other value is sent as is."""
        data = dict(data or {})
        if timestamp == "auto":
            data["timestamp"] = int(time.time())
        elif timestamp is not None:
            data["timestamp"] = timestamp
        self.clock += 1
        sent_clock = None
        if clock == "auto":
            data["clock"] = sent_clock = self.clock
        elif clock is not None:
            data["clock"] = sent_clock = clock
        frame = msgpack.packb({"service": service, "data": data}, use_bin_type=True)
        reply = self.decode(self.raw(frame, timeout_ms), service, sent_clock)
        return reply

    def decode(self, frame, service, sent_clock):
        """Decodes a reply, checks its envelope (recorded in envelope_log,
        reported by the envelope check) and advances the Lamport clock."""
        try:
            env = unpack(frame)
        except Exception as e:
            raise CheckFailed("reply is not MessagePack: %s (%s)" % (e, short(frame)))
        if not isinstance(env, dict) or not isinstance(env.get("data"), dict):
            raise CheckFailed("reply is not {service, data}: %s" % short(env))
        self.replies += 1
        d = env["data"]
        where = "reply to %s" % (service if service is not None else "a bad request")
        problems = []
        if not isinstance(env.get("service"), str):
            problems.append("%s: service is %s" % (where, short(env.get("service"))))
        elif service is not None and env["service"] != service:
            problems.append("%s: service is %r" % (where, env["service"]))
        if "timestamp" not in d or not isinstance(d["timestamp"], (int, float, str)) \
                or isinstance(d["timestamp"], bool):
            problems.append("%s: no usable timestamp (%s)" % (where, short(d.get("timestamp"))))
        if not is_int(d.get("clock")):
            problems.append("%s: clock is not an integer (%s)" % (where, short(d.get("clock"))))
        else:
            if sent_clock is not None and d["clock"] <= sent_clock:
                problems.append("%s: reply clock %d is not above the clock sent, %d"
                                % (where, d["clock"], sent_clock))
            self.clock = max(self.clock, d["clock"])
        self.clock += 1
        self.envelope_log.extend(problems)
        return env


def status_of(env):
    return env["data"].get("status")


def expect_status(env, want):
    d = env["data"]
    require(d.get("status") == want,
            "status %s, want %r (reply %s)" % (short(d.get("status")), want, short(d)))


def expect_erro(env, text_key="description"):
    d = env["data"]
    require(d.get("status") == "erro", "status %s, want 'erro' (reply %s)" % (short(d.get("status")), short(d)))
    t = d.get(text_key)
    require(isinstance(t, str) and t.strip() != "",
            "erro reply without a %r text (reply %s)" % (text_key, short(d)))


# ---------------------------------------------------------------------------
# Checks of one endpoint


class EndpointChecks:
    def __init__(self, ctx, results, label, endpoint, sub_endpoint):
        self.ctx = ctx
        self.r = results
        self.label = label
        self.endpoint = endpoint
        self.sub_endpoint = sub_endpoint
        self.envelope_problems = []
        self.c = Client(ctx, endpoint, self.envelope_problems)
        tag = secrets.token_hex(4)
        # Unique names per run and per endpoint (the same server answers
        # both endpoints). Every name starts with a distinct letter and
        # the tag, so no two share a prefix by accident.
        self.user = "u%s%s" % (tag, label)
        self.peer = "v%s%s" % (tag, label)
        self.chan = "c%s%s" % (tag, label)
        self.tag = tag

    def name(self, check):
        return "%s.%s" % (self.label, check)

    def check(self, check, fn, *args):
        self.r.run(self.name(check), fn, *args)

    def run_all(self):
        c = self.check
        c("login.new", self.login_new)
        c("login.again", self.login_again)
        c("users", self.users)
        c("channel.new", self.channel_new)
        c("channel.exists", self.channel_exists)
        c("channels", self.channels)
        c("publish", self.publish)
        c("publish.missing_channel", self.publish_missing_channel)
        c("message", self.message)
        c("message.missing_dst", self.message_missing_dst)
        c("history.channel", self.history_channel)
        c("history.dm", self.history_dm)
        c("request_id", self.request_id)
        c("lamport", self.lamport)
        c("timestamp.int", self.timestamp_form, "int", int(time.time()))
        c("timestamp.float", self.timestamp_form, "float", time.time())
        c("timestamp.rfc3339", self.timestamp_form, "rfc3339",
          datetime.datetime.now(datetime.timezone.utc).isoformat())
        c("timestamp.rfc3339_z", self.timestamp_form, "rfc3339z",
          datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        c("no_clock", self.no_clock)
        for bad, frame, svc in self.bad_inputs():
            c("bad." + bad, self.bad_input, frame, svc)
        c("concurrent_req", self.concurrent)
        c("pubsub", self.pubsub)
        # Last: every reply seen above had a timestamp and an integer
        # Lamport clock above the clock we sent.
        c("envelope.all_replies", self.envelope)
        self.c.close()

    # -- services -----------------------------------------------------------

    def login_new(self):
        expect_status(self.c.request("login", {"user": self.user}), "sucesso")
        expect_status(self.c.request("login", {"user": self.peer}), "sucesso")

    def login_again(self):
        expect_status(self.c.request("login", {"user": self.user}), "sucesso")

    def users(self):
        d = self.c.request("users")["data"]
        us = d.get("users")
        require(isinstance(us, list), "no list under 'users': %s" % short(d))
        require(self.user in us and self.peer in us,
                "%r/%r not in users (%d names)" % (self.user, self.peer, len(us)))

    def channel_new(self):
        expect_status(self.c.request("channel", {"channel": self.chan}), "sucesso")

    def channel_exists(self):
        expect_erro(self.c.request("channel", {"channel": self.chan}), "description")

    def channels(self):
        d = self.c.request("channels")["data"]
        for key in ("channels", "users"):
            v = d.get(key)
            require(isinstance(v, list), "no list under %r: %s" % (key, short(d)))
            require(self.chan in v, "%r not under %r (%d names)" % (self.chan, key, len(v)))

    def publish(self):
        expect_status(self.c.request("publish", {"user": self.user, "channel": self.chan,
                                                 "message": "hello from python"}), "OK")

    def publish_missing_channel(self):
        env = self.c.request("publish", {"user": self.user, "channel": "nochan" + self.tag,
                                         "message": "into the void"})
        expect_erro(env, "message")

    def message(self):
        expect_status(self.c.request("message", {"src": self.user, "dst": self.peer,
                                                 "message": "psst"}), "OK")

    def message_missing_dst(self):
        env = self.c.request("message", {"src": self.user, "dst": "nouser" + self.tag,
                                         "message": "anyone?"})
        expect_erro(env, "message")

    def history_channel(self):
        ch = "h%s%s" % (self.tag, self.label)
        expect_status(self.c.request("channel", {"channel": ch}), "sucesso")
        texts = ["first %s" % self.tag, "second %s" % self.tag, "third %s" % self.tag]
        for t in texts:
            expect_status(self.c.request("publish", {"user": self.user, "channel": ch, "message": t}), "OK")
        d = self.c.request("history", {"channel": ch})["data"]
        msgs = d.get("messages")
        require(isinstance(msgs, list), "no list under 'messages': %s" % short(d))
        got = [m.get("message") if isinstance(m, dict) else m for m in msgs]
        require(got == texts, "messages %s, want %s (oldest first)" % (short(got), texts))
        ids = []
        for m in msgs:
            require(m.get("user") == self.user, "user %s, want %r" % (short(m.get("user")), self.user))
            require("timestamp" in m, "no timestamp in %s" % short(m))
            require(is_int(m.get("clock")), "clock not an integer in %s" % short(m))
            require(is_int(m.get("id")), "id not an integer in %s" % short(m))
            ids.append(m["id"])
        require(ids == sorted(ids) and len(set(ids)) == len(ids), "ids %s not increasing" % ids)

    def history_dm(self):
        a, b = "d%s%s" % (self.tag, self.label), "e%s%s" % (self.tag, self.label)
        for who in (a, b):
            expect_status(self.c.request("login", {"user": who}), "sucesso")
        want = [(a, "a to b %s" % self.tag), (b, "b to a %s" % self.tag), (a, "a again %s" % self.tag)]
        for src, text in want:
            dst = b if src == a else a
            expect_status(self.c.request("message", {"src": src, "dst": dst, "message": text}), "OK")
        d = self.c.request("history", {"user": a, "peer": b})["data"]
        msgs = d.get("messages")
        require(isinstance(msgs, list), "no list under 'messages': %s" % short(d))
        got = [(m.get("from"), m.get("message")) for m in msgs if isinstance(m, dict)]
        require(got == want, "DM history %s, want %s" % (short(got, 400), want))
        for m in msgs:
            require("timestamp" in m and is_int(m.get("clock")) and is_int(m.get("id")),
                    "message without timestamp/clock/id: %s" % short(m))

    def request_id(self):
        ch = "r%s%s" % (self.tag, self.label)
        expect_status(self.c.request("channel", {"channel": ch}), "sucesso")
        rid = "rid-" + secrets.token_hex(8)
        body = {"user": self.user, "channel": ch, "message": "once " + self.tag, "request_id": rid}
        expect_status(self.c.request("publish", body), "OK")
        expect_status(self.c.request("publish", body), "OK")
        d = self.c.request("history", {"channel": ch})["data"]
        got = [m.get("message") for m in d.get("messages") or []]
        require(got == ["once " + self.tag], "history %s, want the post once" % short(got))

    def lamport(self):
        for sent in (1000, self.c.clock + 1000):
            env = self.c.request("users", clock=sent)
            got = env["data"].get("clock")
            require(is_int(got) and got > sent, "sent clock %d, reply clock %s" % (sent, short(got)))

    def timestamp_form(self, form, ts):
        expect_status(self.c.request("login", {"user": self.user}, timestamp=ts), "sucesso")

    def no_clock(self):
        expect_status(self.c.request("login", {"user": self.user}, clock=None), "sucesso")
        expect_status(self.c.request("publish", {"user": self.user, "channel": self.chan,
                                                 "message": "no clock"}, clock=None), "OK")

    # -- bad inputs ---------------------------------------------------------

    def bad_inputs(self):
        """(name, frame, service the erro reply names; None: any)"""
        p = lambda v: msgpack.packb(v, use_bin_type=True)
        now = int(time.time())
        stamp = {"timestamp": now, "clock": 1}
        return [
            ("not_msgpack", b"\xc1 this is not MessagePack", "error"),
            ("array", p(["login", {"user": self.user}]), "error"),
            ("no_service", p({"data": {"user": self.user}}), "error"),
            ("service_not_string", p({"service": 5, "data": {}}), "error"),
            ("data_not_map", p({"service": "login", "data": "x"}), "login"),
            ("unknown_service", p({"service": "nope", "data": dict(stamp)}), "nope"),
            ("missing_field", p({"service": "login", "data": dict(stamp)}), "login"),
            ("wrong_type", p({"service": "login", "data": dict(stamp, user=123)}), "login"),
            ("name_65", p({"service": "login", "data": dict(stamp, user="n" * 65)}), "login"),
            ("name_space", p({"service": "channel", "data": dict(stamp, channel="a b")}), "channel"),
            ("name_empty", p({"service": "login", "data": dict(stamp, user="")}), "login"),
            ("huge_request", p({"service": "publish", "data": dict(
                stamp, user=self.user, channel=self.chan, message="x" * (200 << 10))}), None),
            ("map_4_billion", b"\xdf\xff\xff\xff\xff", "error"),
        ]

    def bad_input(self, frame, service):
        timeout = HUGE_TIMEOUT_MS if len(frame) > 65536 else TIMEOUT_MS
        # 1. A REQ socket gets one "erro" reply (else it would hang).
        env = self.c.decode(self.c.raw(frame, timeout), None, None)
        expect_erro(env, "description")
        if service is not None:
            require(env.get("service") == service,
                    "reply service %s, want %r" % (short(env.get("service")), service))
        # 2. The same socket still works: the next reply is the right one
        #    (a stray second reply would be read here instead).
        d = self.c.request("users")["data"]
        require(isinstance(d.get("users"), list) and self.user in d["users"],
                "valid request after it got %s" % short(d))
        # 3. Exactly one reply: a DEALER sees no second one.
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVTIMEO, timeout)
        s.connect(self.endpoint)
        try:
            s.send_multipart([b"", frame])
            try:
                first = s.recv_multipart()
            except zmq.Again:
                raise CheckFailed("DEALER got no reply")
            require(len(first) == 2 and first[0] == b"", "DEALER reply frames %s" % short(first))
            if s.poll(ONCE_WINDOW_MS, zmq.POLLIN):
                raise CheckFailed("a second reply came: %s" % short(s.recv_multipart()))
        finally:
            s.close(linger=0)

    # -- concurrency --------------------------------------------------------

    def concurrent(self):
        n = 25
        barrier = threading.Barrier(2)
        errors = []

        def worker(who):
            cl = Client(self.ctx, self.endpoint, self.envelope_problems)
            try:
                barrier.wait(5)
                for i in range(n):
                    missing = "x%s%s%s%d" % (self.tag, self.label, who, i)
                    env = cl.request("publish", {"user": self.user, "channel": missing, "message": "m"})
                    d = env["data"]
                    if env.get("service") != "publish" or d.get("status") != "erro" \
                            or missing not in str(d.get("message")):
                        errors.append("%s request %d (channel %s) got %s" % (who, i, missing, short(env)))
                    svc = "users" if who == "A" else "channels"
                    env = cl.request(svc)
                    if env.get("service") != svc or not isinstance(env["data"].get(svc), list):
                        errors.append("%s request %s got %s" % (who, svc, short(env)))
            except Exception as e:
                errors.append("%s: %s: %s" % (who, type(e).__name__, e))
            finally:
                cl.close()

        ts = [threading.Thread(target=worker, args=(w,)) for w in ("A", "B")]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        require(not any(t.is_alive() for t in ts), "a worker is still running after 60 s")
        require(not errors, "%d wrong replies, first: %s" % (len(errors), "; ".join(errors[:3])))

    # -- publish/subscribe --------------------------------------------------

    def pubsub(self):
        g = "g%s%s" % (self.tag, self.label)
        g2 = g + "2"  # has g as a prefix: ZeroMQ delivers it to a "g" subscriber
        u = "p%s%s" % (self.tag, self.label)
        sender = "s%s%s" % (self.tag, self.label)
        for name in (u, sender):
            expect_status(self.c.request("login", {"user": name}), "sucesso")
        for ch in (g, g2):
            expect_status(self.c.request("channel", {"channel": ch}), "sucesso")

        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(self.sub_endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, g.encode())
        sub.setsockopt(zmq.SUBSCRIBE, u.encode())
        try:
            # Warm up: publish until the first publication arrives (the
            # subscription travels to the proxy asynchronously).
            deadline = time.monotonic() + 5
            warm = False
            i = 0
            while time.monotonic() < deadline and not warm:
                expect_status(self.c.request("publish", {"user": sender, "channel": g,
                                                         "message": "warmup %d" % i}), "OK")
                i += 1
                if sub.poll(200, zmq.POLLIN):
                    warm = True
            require(warm, "no publication arrived on %s within 5 s" % self.sub_endpoint)
            drain(sub, quiet_ms=300)

            post, other, dm = "post " + self.tag, "other " + self.tag, "dm " + self.tag
            expect_status(self.c.request("publish", {"user": sender, "channel": g, "message": post}), "OK")
            expect_status(self.c.request("publish", {"user": sender, "channel": g2, "message": other}), "OK")
            expect_status(self.c.request("message", {"src": sender, "dst": u, "message": dm}), "OK")

            got = []  # (frames) of every publication
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and len(got) < 3:
                if sub.poll(100, zmq.POLLIN):
                    got.append(sub.recv_multipart())
            got.extend(drain(sub, quiet_ms=300))
        finally:
            sub.close(linger=0)

        problems = []
        on_g, on_u, on_g2 = [], [], []
        for frames in got:
            if len(frames) != 2:
                problems.append("publication of %d frames: %s" % (len(frames), short(frames)))
                continue
            topic, payload = frames
            try:
                data = unpack(payload)
            except Exception as e:
                problems.append("payload on %r is not MessagePack: %s" % (topic, e))
                continue
            if not isinstance(data, dict):
                problems.append("payload on %r is not a map: %s" % (topic, short(data)))
                continue
            if isinstance(data.get("message"), str) and data["message"].startswith("warmup"):
                continue  # a late warm-up post
            # A receiver filters by the exact topic: ZeroMQ matched a prefix.
            if topic == g.encode():
                on_g.append(data)
            elif topic == u.encode():
                on_u.append(data)
            elif topic == g2.encode():
                on_g2.append(data)
            else:
                problems.append("unexpected topic %r: %s" % (topic, short(data)))

        def fields(data, keys):
            missing = [k for k in keys if k not in data]
            if missing:
                problems.append("payload %s lacks %s" % (short(data), missing))
            elif not is_int(data.get("clock")):
                problems.append("payload clock not an integer: %s" % short(data))

        if len(on_g) != 1 or on_g[0].get("message") != post:
            problems.append("topic %r: got %s, want exactly the post %r" % (g, short(on_g), post))
        else:
            fields(on_g[0], ("user", "message", "timestamp", "clock"))
            if on_g[0].get("user") != sender:
                problems.append("post user %s, want %r" % (short(on_g[0].get("user")), sender))
        if len(on_u) != 1 or on_u[0].get("message") != dm:
            problems.append("topic %r: got %s, want exactly the DM %r" % (u, short(on_u), dm))
        else:
            fields(on_u[0], ("from", "message", "timestamp", "clock"))
            if on_u[0].get("from") != sender:
                problems.append("DM from %s, want %r" % (short(on_u[0].get("from")), sender))
        if len(on_g2) != 1 or on_g2[0].get("message") != other:
            problems.append("topic %r (prefix match of %r): got %s, want the post %r"
                            % (g2, g, short(on_g2), other))
        require(not problems, "; ".join(problems))

    # -- envelope -----------------------------------------------------------

    def envelope(self):
        require(self.c.replies > 0, "no reply was checked")
        require(not self.envelope_problems, "%d problems, first: %s"
                % (len(self.envelope_problems), "; ".join(self.envelope_problems[:3])))


def drain(sub, quiet_ms):
    """Reads publications until none came for quiet_ms."""
    out = []
    while sub.poll(quiet_ms, zmq.POLLIN):
        out.append(sub.recv_multipart())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--req", action="append", required=True, help="request endpoint (repeatable)")
    ap.add_argument("--sub", required=True, help="publication endpoint (the broker's XPUB)")
    args = ap.parse_args()

    print("# libzmq %s, pyzmq %s, msgpack %s" % (zmq.zmq_version(), zmq.__version__,
                                                 ".".join(map(str, msgpack.version))), flush=True)
    ctx = zmq.Context()
    results = Results()
    for i, ep in enumerate(args.req, 1):
        label = "req%d" % i
        print("# %s = %s (sub %s)" % (label, ep, args.sub), flush=True)
        EndpointChecks(ctx, results, label, ep, args.sub).run_all()
    ctx.destroy(linger=0)
    print("%d passed, %d failed" % (results.passed, results.failed), flush=True)
    return 0 if results.failed == 0 and results.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
