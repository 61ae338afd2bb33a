-- HTTPS serving (--tls-cert, --tls-key) through the real binary, against a throwaway CA
-- made here with the openssl CLI (tests/support/tls.lua): curl --cacert, openssl s_client
-- (protocols, ALPN, the chain), Python's ssl module on raw connections (keep-alive,
-- pipelining, large bodies, static files, streams, SSE) and python3-websockets (wss),
-- moonlet's own HTTP client; a plain-HTTP request on the TLS port, silent clients, bad
-- files at start, and certificate reloads on SIGHUP (one process and --workers).
local t = require "moonlet.testing"
local tls = require "tests.support.tls"

local fmt, concat = string.format, table.concat
local q = t.shell_quote

local APP = "tests/apps/tls"

local function sh(cmd, timeout)
  return t.run({ "-c", cmd }, { bin = "/bin/sh", timeout = timeout or 30 })
end

local function curl(args)
  local a = { "-sS", "--max-time", "10" }
  for _, x in ipairs(args) do a[#a + 1] = x end
  return t.run(a, { bin = "curl", timeout = 20 })
end

-- openssl s_client against port with extra arguments (a string); stdin is empty, so it
-- ends after the handshake. Returns stdout .. stderr.
local function s_client(port, extra)
  local r = sh(fmt("timeout 10 openssl s_client -connect 127.0.0.1:%d %s </dev/null 2>&1", port,
                   extra or ""))
  return r.stdout
end

-- The subject of the certificate a new connection to port is served.
local function served_subject(port)
  local r = sh(fmt("timeout 10 openssl s_client -connect 127.0.0.1:%d </dev/null 2>/dev/null "
                   .. "| openssl x509 -noout -subject", port))
  return (r.stdout:match("CN%s*=%s*([^\n]+)"))
end

local PY_HEAD = [[
import socket, ssl, sys, json, hashlib
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(s, server_hostname="127.0.0.1")
def read_resp(f):
    line = f.readline()
    if not line: return None
    headers = {}
    while True:
        l = f.readline()
        if l in (b"\r\n", b""): break
        k, v = l.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            n = int(f.readline().split(b";")[0], 16)
            if n == 0:
                f.readline()
                break
            body += f.read(n)
            f.readline()
    else:
        body = f.read(int(headers.get("content-length", "0")))
    return int(line.split()[1]), headers, body
def get(path, extra=""):
    return ("GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path, extra)).encode()
]]

-- A raw connection whose TLS records the script makes itself (ssl.MemoryBIO): raw (the
-- socket), o (the session), flush() sends what o wrote, pump() feeds what came, and
-- until(marker) reads up to marker and returns the first line before it.
local PY_RECORDS = [[
import time
raw = socket.create_connection(("127.0.0.1", port), timeout=10)
raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
o = ctx.wrap_bio(inc, outg, server_hostname="127.0.0.1")
def flush():
    data = outg.read()
    if data: raw.sendall(data)
def pump():
    data = raw.recv(65536)
    if not data: raise EOFError
    inc.write(data)
while True:
    try:
        o.do_handshake(); flush(); break
    except ssl.SSLWantReadError:
        flush(); pump()
got = [b""]
def until(marker):
    while marker not in got[0]:
        try:
            got[0] += o.read(65536)
        except ssl.SSLWantReadError:
            pump()
    one, got[0] = got[0].split(marker, 1)
    return one.split(b"\r\n")[0].decode()
]]

-- Runs PY_HEAD .. script with python3 (port, ca, arg as arguments); returns its stdout.
local function py(port, ca, script, arg)
  local r = t.run({ "-c", PY_HEAD .. script, tostring(port), ca, arg },
                  { bin = "/usr/bin/python3", timeout = 60 })
  assert(r.status == 0, r.stderr)
  return r.stdout
end

describe("TLS serving", function()
  local pki, srv, files, mport
  lazy_setup(function()
    pki = tls.make_pki(t.tmpdir(), { ip = "127.0.0.1", dns = "localhost", intermediate = true })
    files = t.tmpdir()
    local blob = {}
    for i = 1, 40000 do blob[i] = fmt("%08d line of a static file\n", i) end   -- ~1.3 MB
    t.write_file(files .. "/blob.txt", concat(blob))
    mport = t.free_port()
    srv = t.server{ app = APP, env = { TLS_STATIC_DIR = files },
                    args = { "--tls-cert", pki.cert, "--tls-key", pki.key, "--header-timeout", "1",
                             "--metrics-port", tostring(mport) } }
  end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("says https in its listening line, and curl --cacert verifies the chain", function()
    assert.are.same(fmt("https://127.0.0.1:%d", srv.port), srv.url)
    local r = curl{ "--cacert", pki.ca, srv.url .. "/hello" }
    assert.are.same(0, r.status, r.stderr)
    assert.are.same("hello over tls", r.stdout)
    r = curl{ "--cacert", pki.ca, fmt("https://localhost:%d/scheme", srv.port) }
    assert.are.same('{"scheme":"https"}', r.stdout, r.stderr)
    -- a pooled route's req is a copy made for its thread: the scheme goes with it
    r = curl{ "--cacert", pki.ca, srv.url .. "/pool/scheme" }
    assert.are.same('{"scheme":"https"}', r.stdout, r.stderr)
    -- the access log and the metrics (served in plain HTTP on their own port) as ever
    srv:wait_log("GET /pool/scheme 200", 5)
    local m = assert(t.request(mport, "GET", "/metrics")).body
    assert.matches('moonlet_http_requests_total{route="/pool/scheme",method="GET",code="2xx"} 1',
                   m, 1, true)
  end)

  it("negotiates TLS 1.3 and 1.2 with ALPN http/1.1 and sends the intermediate", function()
    local out = s_client(srv.port, "-alpn http/1.1 -showcerts -CAfile " .. q(pki.ca))
    assert.matches("New, TLSv1%.3, Cipher is", out)
    assert.matches("ALPN protocol: http/1%.1", out)
    assert.matches("Verify return code: 0 %(ok%)", out)
    local _, ncerts = out:gsub("BEGIN CERTIFICATE", "")
    assert.are.same(2, ncerts)   -- the server's, then the intermediate's
    assert.matches("i:%s*CN%s*=%s*moonlet test intermediate CA", out)
    out = s_client(srv.port, "-tls1_2 -alpn http/1.1 -CAfile " .. q(pki.ca))
    assert.matches("New, TLSv1%.2, Cipher is", out)
    assert.matches("ALPN protocol: http/1%.1", out)
    assert.matches("Verify return code: 0 %(ok%)", out)
    -- no ALPN offered: fine
    out = s_client(srv.port, "-CAfile " .. q(pki.ca))
    assert.matches("No ALPN negotiated", out)
    assert.matches("Verify return code: 0 %(ok%)", out)
  end)

  it("resumes sessions: TLS 1.3 tickets and the TLS 1.2 session cache", function()
    local out = py(srv.port, pki.ca, [[
for ver in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
    ctx.maximum_version = ver
    sess = None
    for _ in range(2):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                            server_hostname="127.0.0.1", session=sess)
        f = s.makefile("rb")
        s.sendall(get("/hello"))   # a TLS 1.3 ticket arrives after the handshake
        read_resp(f)
        print(s.version(), s.session_reused)
        sess = s.session
        s.close()
]])
    assert.are.same("TLSv1.3 False\nTLSv1.3 True\nTLSv1.2 False\nTLSv1.2 True\n", out)
  end)

  it("refuses TLS 1.1, and ALPN without http/1.1", function()
    -- SECLEVEL=0 lets this client offer TLS 1.1 at all: the refusal is the server's alert
    local out = s_client(srv.port, "-tls1_1 -cipher DEFAULT@SECLEVEL=0")
    assert.matches("alert protocol version", out)
    assert.matches("New, %(NONE%), Cipher is %(NONE%)", out)
    out = s_client(srv.port, "-alpn h2")
    assert.matches("alert no application protocol", out)
  end)

  it("answers moonlet's own HTTP client (ca_file), calling itself", function()
    local r = curl{ "--cacert", pki.ca, srv.url .. "/fetch?path=/scheme&ca=" .. pki.ca }
    assert.are.same(0, r.status, r.stderr)
    assert.are.same({ status = 200, body = '{"scheme":"https"}' }, t.json_decode(r.stdout))
  end)

  it("keeps a connection alive and answers pipelined requests in order", function()
    local out = py(srv.port, pki.ca, [[
s = connect()
f = s.makefile("rb")
for path in ("/hello", "/scheme", "/hello"):
    s.sendall(get(path))
    st, h, body = read_resp(f)
    print(st, body.decode())
s.sendall(b"".join(get("/big?n=%d" % (i * 1000)) for i in range(1, 21)))
sizes = []
for i in range(1, 21):
    st, h, body = read_resp(f)
    assert st == 200 and body == b"x" * (i * 1000), (i, st, len(body))
    sizes.append(len(body))
print(len(sizes), sum(sizes))
s.sendall(get("/hello", "Connection: close\r\n"))
st, h, body = read_resp(f)
print(st, h.get("connection"), f.read() == b"")
]])
    assert.are.same("200 hello over tls\n200 {\"scheme\":\"https\"}\n200 hello over tls\n"
                    .. "20 210000\n200 close True\n", out)
  end)

  -- the server reads records out of the buffer each socket read fills, keeping what one
  -- read leaves of the next record: records cut anywhere, many records in one read
  it("takes requests cut into 1-byte records, or into 1-byte TCP segments", function()
    local out = py(srv.port, pki.ca, PY_RECORDS .. [[
def response():   # the status line of the next response (each ends with its body)
    return until(b"hello over tls")
# three pipelined requests, a record per byte, sent in one write
for b in get("/hello") * 3:
    o.write(bytes([b]))
flush()
print(response(), response(), response())
# one request's records, sent a byte a segment
o.write(get("/hello"))
data = outg.read()
for i in range(len(data)):
    raw.sendall(data[i:i + 1])
    time.sleep(0.002)
print(response())
]])
    assert.are.same("HTTP/1.1 200 OK HTTP/1.1 200 OK HTTP/1.1 200 OK\nHTTP/1.1 200 OK\n", out)
  end)

  -- an idle connection's session gives its record buffers back (after 100 ms) and takes
  -- them again: between keep-alive requests, inside a record that arrives in two parts (the
  -- part read stays), and between the chunks of a stream in flight
  it("goes on after idle pauses: between requests, mid-record, mid-stream", function()
    local out = py(srv.port, pki.ca, PY_RECORDS .. [[
o.write(get("/hello")); flush()
print(until(b"hello over tls"))
time.sleep(0.3)
o.write(get("/hello")); flush()
print(until(b"hello over tls"))
time.sleep(0.3)
o.write(get("/hello"))
record = outg.read()
raw.sendall(record[:9])
time.sleep(0.3)
raw.sendall(record[9:])
print(until(b"hello over tls"))
o.write(get("/stream?pause=0.25")); flush()
print(until(b"line 5\n"))
until(b"0\r\n\r\n")   # the stream's last chunk
time.sleep(0.3)
o.write(get("/hello")); flush()
print(until(b"hello over tls"))
]])
    assert.are.same(("HTTP/1.1 200 OK\n"):rep(5), out)
  end)

  -- the records wait in the connection's output while the socket is full
  it("sends a large file whole to a client that reads slowly", function()
    local out = py(srv.port, pki.ca, [[
import time
blob = open(sys.argv[3], "rb").read()
s = connect()
f = s.makefile("rb")
s.sendall(get("/files/blob.txt") + get("/big?n=300000"))
time.sleep(0.3)   # the socket's buffers fill, the server waits
body = b""
st, h, body = read_resp(f)
print(st, body == blob)
st, h, body = read_resp(f)
print(st, body == b"x" * 300000)
]], files .. "/blob.txt")
    assert.are.same("200 True\n200 True\n", out)
  end)

  it("carries large bodies both ways", function()
    local out = py(srv.port, pki.ca, [[
import os
data = os.urandom(900000)
s = connect()
f = s.makefile("rb")
s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
st, h, body = read_resp(f)
print(st, len(body), body == data)
s.sendall(get("/big?n=8000000"))
st, h, body = read_resp(f)
print(st, len(body), body == b"x" * 8000000)
]])
    assert.are.same("200 900000 True\n200 8000000 True\n", out)
  end)

  it("serves a static file through TLS (no sendfile), and streams and SSE", function()
    local out = py(srv.port, pki.ca, [[
blob = open(sys.argv[3], "rb").read()
s = connect()
f = s.makefile("rb")
s.sendall(get("/files/blob.txt"))
st, h, body = read_resp(f)
print(st, len(body) == len(blob), body == blob)
s.sendall(get("/stream"))
st, h, body = read_resp(f)
print(st, h.get("transfer-encoding"), body.decode().replace("\n", "|"))
s.sendall(get("/sse"))
st, h, body = read_resp(f)
print(st, h.get("content-type"), body.decode().count("event: tick"))
]], files .. "/blob.txt")
    assert.are.same("200 True True\n200 chunked line 1|line 2|line 3|line 4|line 5|\n"
                    .. "200 text/event-stream 3\n", out)
  end)

  it("speaks WebSocket over TLS (wss, python3-websockets)", function()
    local out = py(srv.port, pki.ca, [[
import asyncio, websockets
async def main():
    async with websockets.connect("wss://127.0.0.1:%d/ws" % port, ssl=ctx) as ws:
        await ws.send("hi"); print(await ws.recv())
        await ws.send(b"\x00\x01bin"); print(repr(await ws.recv()))
        await ws.send("y" * 300000); print(len(await ws.recv()))
asyncio.run(main())
]])
    assert.are.same("echo hi\nb'\\x00\\x01bin'\n300005\n", out)
  end)

  it("answers plain HTTP on the TLS port with a plain 400, then closes", function()
    local c = assert(t.connect(srv.port))
    assert(c:send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"))
    local all = assert(c:read_all(5))   -- returns at the close, never hangs
    c:close()
    assert.matches("^HTTP/1%.1 400 Bad Request\r\n", all)
    assert.matches("Connection: close\r\n", all)
    assert.matches("The plain HTTP request was sent to HTTPS port", all, 1, true)
  end)

  it("closes a connection whose records do not decrypt, and serves on", function()
    local out = py(srv.port, pki.ca, [[
import os
s = connect()
f = s.makefile("rb")
s.sendall(get("/hello"))
print(read_resp(f)[0])
os.write(s.fileno(), b"\x17\x03\x03\x00\x20" + os.urandom(32))   # a forged record
try:
    print("eof", s.recv(100) == b"")
except (ssl.SSLError, ConnectionError) as e:
    print("eof", True)
]])
    assert.are.same("200\neof True\n", out)
    assert.are.same("hello over tls", curl{ "--cacert", pki.ca, srv.url .. "/hello" }.stdout)
  end)

  it("closes a client that says nothing, or stops mid-handshake, after the header timeout", function()
    local silent = assert(t.connect(srv.port))
    local partial = assert(t.connect(srv.port))
    assert(partial:send("\22\3\1\0\200\1\0\0"))   -- the start of a ClientHello
    assert.is_true(silent:is_closed(5))
    assert.is_true(partial:is_closed(5))
    silent:close()
    partial:close()
    -- the server still serves
    assert.are.same("hello over tls", curl{ "--cacert", pki.ca, srv.url .. "/hello" }.stdout)
  end)
end)

describe("TLS certificate files", function()
  local pki
  lazy_setup(function() pki = tls.make_pki(t.tmpdir(), { ip = "127.0.0.1" }) end)

  local function start(args)
    local p = t.start{ app = APP, args = args }
    assert.is_false(p.listening)
    return p:wait(10), p:stderr()
  end

  it("refuses to start without both, or with files it cannot use (exit 2)", function()
    local other = tls.make_pki(t.tmpdir(), { ip = "127.0.0.1" })
    local status, err = start{ "--tls-cert", pki.cert }
    assert.are.same(2, status)
    assert.matches("--tls-cert needs --tls-key", err, 1, true)
    status, err = start{ "--tls-key", pki.key }
    assert.are.same(2, status)
    assert.matches("--tls-key needs --tls-cert", err, 1, true)
    status, err = start{ "--tls-cert", "/nonexistent.pem", "--tls-key", pki.key }
    assert.are.same(2, status)
    assert.matches("cannot load the TLS certificate /nonexistent.pem: No such file", err, 1, true)
    status, err = start{ "--tls-cert", pki.cert, "--tls-key", pki.ca }   -- a certificate, no key
    assert.are.same(2, status)
    assert.matches("cannot load the TLS key " .. pki.ca, err, 1, true)
    status, err = start{ "--tls-cert", pki.cert, "--tls-key", other.key }
    assert.are.same(2, status)
    assert.matches("does not match the certificate", err, 1, true)
    -- --workers: said once by the CLI, before any worker starts
    status, err = start{ "--workers", "2", "--tls-cert", pki.cert, "--tls-key", other.key }
    assert.are.same(2, status)
    assert.matches("does not match the certificate", err, 1, true)
  end)
end)

describe("TLS certificates reloaded on SIGHUP", function()
  local dir, old, new
  lazy_setup(function()
    old = tls.make_pki(t.tmpdir(), { ip = "127.0.0.1", cn = "moonlet old cert" })
    new = tls.make_pki(t.tmpdir(), { ip = "127.0.0.1", cn = "moonlet new cert" })
  end)

  -- The live files the server is started with, holding pki's certificate and key.
  local function install(pki)
    t.write_file(dir .. "/cert.pem", t.read_file(pki.cert))
    t.write_file(dir .. "/key.pem", t.read_file(pki.key))
  end

  local function serve(extra)
    dir = t.tmpdir()
    install(old)
    local args = { "--tls-cert", dir .. "/cert.pem", "--tls-key", dir .. "/key.pem" }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    return t.server{ app = APP, args = args }
  end

  it("serves the new certificate to new connections; an open one keeps working", function()
    local srv = serve()
    finally(function() srv:stop() end)
    assert.are.same("moonlet old cert", served_subject(srv.port))
    -- a keep-alive connection made with the old certificate, used across the reload
    local flag = dir .. "/go"
    local client = t.spawn({ "-c", PY_HEAD .. [[
import os, time
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = connect()
f = s.makefile("rb")
print(ssl.DER_cert_to_PEM_cert(s.getpeercert(True)).count("CERT"), flush=True)
s.sendall(get("/hello"))
print(read_resp(f)[0], flush=True)
while not os.path.exists(sys.argv[3]): time.sleep(0.02)
s.sendall(get("/scheme"))
st, h, body = read_resp(f)
print(st, body.decode(), flush=True)
]], tostring(srv.port), old.ca, flag }, { bin = "/usr/bin/python3" })
    local deadline = t.now() + 10
    while not client:stdout():find("200\n") and t.now() < deadline do t.sleep(0.02) end
    install(new)
    local mark = srv:mark()
    assert(srv:signal("HUP"))
    srv:wait_log("SIGHUP: TLS certificate reloaded from", 5, mark)
    assert.are.same("moonlet new cert", served_subject(srv.port))
    t.write_file(flag, "")
    assert.are.same(0, client:wait(10))
    assert.are.same('2\n200\n200 {"scheme":"https"}\n', client:stdout())
    -- the new chain verifies against its own CA
    assert.are.same("hello over tls", curl{ "--cacert", new.ca, srv.url .. "/hello" }.stdout)
  end)

  it("keeps the old certificate when the new files are broken, and says why", function()
    local srv = serve()
    finally(function() srv:stop() end)
    t.write_file(dir .. "/cert.pem", "-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    local mark = srv:mark()
    assert(srv:signal("HUP"))
    local line = srv:wait_log("SIGHUP: cannot load the TLS certificate", 5, mark)
    assert.matches("still serving the certificate loaded before", line, 1, true)
    assert.are.same("moonlet old cert", served_subject(srv.port))
    -- a key that does not match the certificate: refused as well
    install(old)
    t.write_file(dir .. "/key.pem", t.read_file(new.key))
    mark = srv:mark()
    assert(srv:signal("HUP"))
    srv:wait_log("SIGHUP: the TLS key .* does not match", 5, mark)
    assert.are.same("moonlet old cert", served_subject(srv.port))
    assert.are.same("hello over tls", curl{ "--cacert", old.ca, srv.url .. "/hello" }.stdout)
  end)

  it("without TLS, SIGHUP is logged, not fatal", function()
    local srv = t.server{ app = APP }
    finally(function() srv:stop() end)
    assert(srv:signal("HUP"))
    srv:wait_log("SIGHUP: nothing to reload %(use %-%-workers for code reloads%)", 5)
    assert.are.same(200, assert(t.request(srv.port, "GET", "/hello")).status)
  end)

  it("--workers: the supervisor's SIGHUP starts workers that load the new files", function()
    local srv = serve{ "--workers", "2" }
    finally(function() srv:stop() end)
    assert.are.same(fmt("https://127.0.0.1:%d", srv.port), srv.url)
    assert.are.same("moonlet old cert", served_subject(srv.port))
    install(new)
    assert(srv:signal("HUP"))
    local deadline, seen = t.now() + 15, nil
    repeat
      seen = served_subject(srv.port)
      if seen ~= "moonlet new cert" then t.sleep(0.1) end
    until seen == "moonlet new cert" or t.now() > deadline
    assert.are.same("moonlet new cert", seen)
    assert.are.same("hello over tls", curl{ "--cacert", new.ca, srv.url .. "/hello" }.stdout)
    -- broken files at the next reload: the new workers fail before they serve, the
    -- generation serving goes on with the certificate it has
    t.write_file(dir .. "/key.pem", "garbage\n")
    local mark = srv:mark()
    assert(srv:signal("HUP"))
    srv:wait_log("before it was ready; generation %d+ keeps serving", 15, mark)
    assert.are.same("moonlet new cert", served_subject(srv.port))
    assert.are.same("hello over tls", curl{ "--cacert", new.ca, srv.url .. "/hello" }.stdout)
  end)
end)
