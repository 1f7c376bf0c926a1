"""libzmq's own pub/sub proxy, the reference BenchmarkFanout compares the
broker with (run by bench/fanout_test.go with Debian's /usr/bin/python3 and
its python3-zmq):

    /usr/bin/python3 bench/fanout_proxy.py XSUB_EP XPUB_EP

binds an XSUB on XSUB_EP (publishers connect there) and an XPUB on XPUB_EP
(subscribers connect there) and runs zmq.proxy(xsub, xpub): libzmq's C
loop, subscriptions forwarded upstream, XPUB filtering by prefix. Endpoints
may use a wildcard port ("tcp://127.0.0.1:*"); the endpoints actually bound
are printed on one line, "READY <xsub> <xpub>". The process exits when its
standard input closes, so it never outlives the benchmark.
"""

import os
import sys
import threading

import zmq


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: fanout_proxy.py XSUB_EP XPUB_EP")
    ctx = zmq.Context()
    xsub = ctx.socket(zmq.XSUB)
    xpub = ctx.socket(zmq.XPUB)
    for s in (xsub, xpub):
        # High water marks high enough that libzmq never drops: the
        # benchmark paces its publisher, so the queues stay bounded.
        s.setsockopt(zmq.SNDHWM, 10_000_000)
        s.setsockopt(zmq.RCVHWM, 10_000_000)
        s.setsockopt(zmq.LINGER, 0)
    xsub.bind(sys.argv[1])
    xpub.bind(sys.argv[2])
    t = threading.Thread(target=zmq.proxy, args=(xsub, xpub), daemon=True)
    t.start()
    print("READY", xsub.getsockopt_string(zmq.LAST_ENDPOINT),
          xpub.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin (or dies)
    os._exit(0)


if __name__ == "__main__":
    main()
