# bench/apps/peers/fastapi_app.py: the FastAPI peer of the peers sections of bench/run.sh,
# run by uvicorn (one process):
#   cd bench/apps/peers && /usr/bin/python3 -m uvicorn fastapi_app:app --port 8000
# The routes of the moonlet apps those sections run:
#   /hello          {"message": "hello"}
#   /sleep?s=1      asyncio.sleep (like moonlet.sleep)
#   /a /b /c /d     the seed experiment, as written in shared/seeds: /a blocks the event
#                   loop, /b hands time.sleep to the default executor (run_in_executor), /c
#                   awaits asyncio.sleep, /d is a `def` route (Starlette's thread pool)
#   /account/{id}   pgbench's select-only statement through an asyncpg pool of BENCH_PG_POOL
#                   connections (16 by default) when BENCH_PG_URL is set; 404 when no row
import asyncio
import os
import time

from fastapi import FastAPI, HTTPException

app = FastAPI()
pg_url = os.environ.get("BENCH_PG_URL")
pg_pool = None


@app.get("/hello")
async def hello():
    return {"message": "hello"}


@app.get("/sleep")
async def sleep(s: float = 1):
    await asyncio.sleep(s)
    return {"slept": s}


@app.get("/a")
async def a():
    time.sleep(1)
    return {"route": "a"}


@app.get("/b")
async def b():
    loop = asyncio.get_event_loop()
    await loop.run_in_executor(None, time.sleep, 1)
    return {"route": "b"}


@app.get("/c")
async def c():
    await asyncio.sleep(1)
    return {"route": "c"}


@app.get("/d")
def d():
    time.sleep(1)
    return {"route": "d"}


if pg_url:
    import asyncpg

    @app.on_event("startup")
    async def open_pool():
        global pg_pool
        n = int(os.environ.get("BENCH_PG_POOL", "16"))
        pg_pool = await asyncpg.create_pool(pg_url, min_size=n, max_size=n)

    @app.get("/account/{aid}")
    async def account(aid: int):
        row = await pg_pool.fetchrow("SELECT abalance FROM pgbench_accounts WHERE aid = $1", aid)
        if row is None:
            raise HTTPException(status_code=404, detail="Account not found")
        return {"abalance": row["abalance"]}
