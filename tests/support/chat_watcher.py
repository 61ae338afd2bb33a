# A second client of apps/chat while the browser talks: a WebSocket on /ws (Python's
# websockets) and a Server-Sent Events reader on /events (raw HTTP over asyncio). Says
# "ready" on stderr once both are connected, then prints the first chat message each got as
# JSON: {"ws": ..., "sse": {"event": ..., "data": ...}}.
# Usage: python3 chat_watcher.py PORT
import asyncio, json, sys
import websockets

port = int(sys.argv[1])

async def sse_first_event():
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    return reader, writer

async def read_event(reader):
    # the body is chunked: collect lines of the chunks until a blank line ends an event
    event, data, buf = "message", [], b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        buf += (await reader.readexactly(size + 2))[:-2]
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.decode()
            if line == "":
                if data:
                    return {"event": event, "data": "\n".join(data)}
            elif line.startswith(":"):
                continue
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))

async def main():
    ws = await websockets.connect("ws://127.0.0.1:%d/ws" % port)
    reader, writer = await sse_first_event()
    print("ready", file=sys.stderr, flush=True)
    got_ws = await asyncio.wait_for(ws.recv(), 30)
    got_sse = await asyncio.wait_for(read_event(reader), 30)
    print(json.dumps({"ws": got_ws, "sse": got_sse}), flush=True)
    await ws.close()
    writer.close()

asyncio.run(main())
