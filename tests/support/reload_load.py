"""Load for the --reload spec: THREADS keep-alive connections GET PATH in a loop until the
file STOP exists (60 s at most), then print {"ok": n, "failed": n, "errors": [...]}.
A request fails if it raises (connection reset or closed, timeout) or is not a 200.

usage: reload_load.py PORT PATH STOP [THREADS]"""
import http.client
import json
import os
import sys
import threading
import time

port, path, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3]
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 4
counts = {"ok": 0, "failed": 0, "errors": []}
lock = threading.Lock()


def run():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    deadline = time.monotonic() + 60
    while not os.path.exists(stop) and time.monotonic() < deadline:
        try:
            conn.request("GET", path)
            res = conn.getresponse()
            res.read()
            good, why = res.status == 200, "status %d" % res.status
        except Exception as e:  # noqa: BLE001 - any failure counts
            good, why = False, repr(e)
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        with lock:
            if good:
                counts["ok"] += 1
            else:
                counts["failed"] += 1
                if len(counts["errors"]) < 5:
                    counts["errors"].append(why)
    conn.close()


workers = [threading.Thread(target=run) for _ in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
print(json.dumps(counts))
