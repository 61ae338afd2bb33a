# bench/run.sh's jobs section, Celery's side: the same no-op task on a Redis broker
# (REDIS_URL), acknowledged after it ran (task_acks_late, as moonlet.jobs acknowledges
# after success), no result backend (moonlet's result is one HSET in its ack script).
#   celery -A celery_noop worker --pool prefork -c 2     (from bench/apps)
#   python3 celery_noop.py e2e N      enqueue N jobs (a worker runs), wait until all acked
#   python3 celery_noop.py enqueue N  enqueue only (no worker yet)
#   python3 celery_noop.py drain N    started before the worker (it says "watching" on
#                                     stderr), waits for it: timed from the first job it
#                                     acknowledged to the last
# Prints "jobs N seconds S". Done: nothing left in the queue's list nor in the unacked
# hash (with acks_late a message leaves it once its task ran).
import os
import sys
import time

import redis
from celery import Celery

url = os.environ["REDIS_URL"]
app = Celery("celery_noop", broker=url)
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=64, task_ignore_result=True,
                broker_connection_retry_on_startup=True)


@app.task(name="noop")
def noop():
    pass


def left(r):
    pipe = r.pipeline()
    pipe.llen("celery")
    pipe.hlen("unacked")
    queued, unacked = pipe.execute()
    return queued + unacked


def main(mode, n):
    r = redis.Redis.from_url(url)
    t0 = time.monotonic()
    if mode != "drain":
        with app.producer_or_acquire() as producer:   # one connection for every send
            for _ in range(n):
                noop.apply_async(producer=producer)
        if mode == "enqueue":
            print("enqueued %d seconds %.3f" % (n, time.monotonic() - t0))
            return
    if mode == "drain":
        print("watching", file=sys.stderr, flush=True)
    first = None
    deadline = time.monotonic() + 600
    while True:
        rest = left(r)
        if mode == "drain" and first is None and rest < n:
            first, t0 = rest, time.monotonic()
        if rest == 0:
            break
        if time.monotonic() > deadline:
            sys.exit("celery: %d jobs left after 600 s" % rest)
        time.sleep(0.002)
    print("jobs %d seconds %.3f" % (first if mode == "drain" else n, time.monotonic() - t0))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
