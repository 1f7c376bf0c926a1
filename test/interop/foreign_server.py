#!/usr/bin/env python3
"""A server of another implementation of the standard, as another team
might write it with libzmq (pyzmq) and msgpack: it registers with the
reference (`rank`, with `addr`), sends `heartbeat` every second, and
answers the standard's server-to-server services on a REP socket:
`clock` (time in seconds), `election` ({"election": "OK"}) and `adjust`
(adds the adjustment to its clock). Everything else gets an `erro` reply,
as the standard asks. It prints one line per request it serves, and the
adjustments it applies, so a test can see what our cluster did with it.

usage: foreign_server.py --reference tcp://H:P --listen tcp://127.0.0.1:P --name NAME
"""
import argparse
import sys
import threading
import time

import msgpack
import zmq

parser = argparse.ArgumentParser()
parser.add_argument("--reference", required=True)
parser.add_argument("--listen", required=True)
parser.add_argument("--name", required=True)
parser.add_argument("--seconds", type=float, default=60)
args = parser.parse_args()

ctx = zmq.Context()
clock = 0
offset = 0.0
lock = threading.Lock()


def stamp(data):
    global clock
    with lock:
        clock += 1
        data["clock"] = clock
    data["timestamp"] = time.time() + offset
    return data


def observe(data):
    global clock
    c = data.get("clock", 0) if isinstance(data, dict) else 0
    if isinstance(c, int):
        with lock:
            clock = max(clock, c) + 1


def reference_loop():
    req = None
    registered = False
    deadline = time.time() + args.seconds
    while time.time() < deadline:
        if req is None:
            req = ctx.socket(zmq.REQ)
            req.setsockopt(zmq.LINGER, 0)
            req.connect(args.reference)
        service = "heartbeat" if registered else "rank"
        req.send(msgpack.packb({"service": service, "data": stamp({"user": args.name, "addr": args.listen})}))
        if req.poll(1000):
            reply = msgpack.unpackb(req.recv(), raw=False)
            data = reply.get("data", {})
            observe(data)
            if service == "rank" and "rank" in data:
                registered = True
                print("registered rank", data["rank"], flush=True)
            elif data.get("status") == "erro":
                registered = False
        else:
            req.close()
            req = None
        time.sleep(1)


threading.Thread(target=reference_loop, daemon=True).start()

rep = ctx.socket(zmq.REP)
rep.bind(args.listen)
deadline = time.time() + args.seconds
while time.time() < deadline:
    if not rep.poll(200):
        continue
    try:
        msg = msgpack.unpackb(rep.recv(), raw=False)
        service = msg.get("service", "")
        data = msg.get("data") or {}
    except Exception as e:  # noqa: BLE001
        rep.send(msgpack.packb({"service": "error", "data": stamp({"status": "erro", "description": str(e)})}))
        continue
    observe(data)
    print("served", service, flush=True)
    if service == "clock":
        reply = {"time": time.time() + offset}
    elif service == "election":
        reply = {"election": "OK"}
    elif service == "adjust":
        adj = data.get("adjustment", 0)
        offset += adj
        print("adjusted", adj, flush=True)
        reply = {"status": "OK"}
    else:
        reply = {"status": "erro", "description": "unknown service %r" % service}
    rep.send(msgpack.packb({"service": service, "data": stamp(reply)}))
sys.exit(0)
