# A TCP listener on 127.0.0.1 whose accept queue is full: connects to it never complete
# (the kernel drops their SYNs), which is how a connect timeout is tested on loopback.
# Prints its port, then holds the listener for argv[1] seconds (default 30).
import socket
import sys
import time

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(0)
port = listener.getsockname()[1]
held = []
for _ in range(8):   # more than a backlog of 0 takes: the queue is full
    c = socket.socket()
    c.setblocking(False)
    try:
        c.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    held.append(c)
time.sleep(0.2)
print(port, flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 30)
