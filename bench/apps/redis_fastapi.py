# bench_redis (bench/run.sh): the FastAPI twin of bench/apps/redis_getset: GET /get reads
# one key, GET /set writes it, through redis-py's asyncio client (redis.asyncio, its
# connection pool) from async routes. REDIS_URL is the throwaway server of the section.
import os

import redis.asyncio as redis
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()
r = redis.from_url(os.environ["REDIS_URL"], max_connections=64)


@app.get("/get", response_class=PlainTextResponse)
async def get():
    v = await r.get("bench:key")
    return (v or b"").decode()


@app.get("/set", response_class=PlainTextResponse)
async def set_():
    await r.set("bench:key", "value")
    return "OK"
