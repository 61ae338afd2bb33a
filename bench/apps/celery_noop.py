# bench/run.sh's jobs section, Celery's side: the same no-op task on a Redis broker
# (REDIS_URL), acknowledged after it ran (task_acks_late, as moonlet.jobs acknowledges
# after success), no result backend (moonlet's result is one HSET in the ack script).
#   celery -A celery_noop worker --pool prefork -c 2    (from bench/apps)
#   python3 celery_noop.py N                             enqueue N jobs, wait until all acked
import os
import sys
import time

import redis
from celery import Celery

url = os.environ["REDIS_URL"]
app = Celery("celery_noop", broker=url)
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=64, task_ignore_result=True,
                broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task(name="noop")
def noop():
    pass


def main(n):
    r = redis.Redis.from_url(url)
    t0 = time.monotonic()
    with app.producer_or_acquire() as producer:   # one connection for every send
        for _ in range(n):
            noop.apply_async(producer=producer)
    t_enq = time.monotonic() - t0
    # done: nothing left in the queue list nor in the unacked hash (acks_late: a message
    # leaves it once its task ran)
    while True:
        pipe = r.pipeline()
        pipe.llen("celery")
        pipe.hlen("unacked")
        queued, unacked = pipe.execute()
        if queued == 0 and unacked == 0:
            break
        if time.monotonic() - t0 > 600:
            sys.exit("celery: %d queued, %d unacked after 600 s" % (queued, unacked))
        time.sleep(0.005)
    print("jobs %d seconds %.3f enqueue_seconds %.3f" % (n, time.monotonic() - t0, t_enq))


if __name__ == "__main__":
    main(int(sys.argv[1]))
