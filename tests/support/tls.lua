-- TLS fixtures for specs: a throwaway CA and server certificate made with the openssl
-- CLI (an intermediate CA too, if asked), and `openssl s_server -WWW` serving a directory
-- over https on 127.0.0.1.
--
--   local tls = require "tests.support.tls"
--   local pki = tls.make_pki(t.tmpdir(), { dns = "localhost" })   -- pki.ca, pki.cert, pki.key
--   local srv = tls.s_server(pki, { ["hello.txt"] = "hi" })          -- srv.port, srv:stop()
--
-- Every command is bounded: openssl calls through t.run's timeout, s_server by
-- coreutils `timeout` (and :stop()).
local t = require "moonlet.testing"

local fmt, concat = string.format, table.concat
local q = t.shell_quote

local _M = {}

local function openssl(dir, args)
  local r = t.run(args, { bin = "openssl", cwd = dir, timeout = 30 })
  if r.status ~= 0 then error("openssl " .. concat(args, " ") .. " failed:\n" .. r.stderr, 3) end
  return r
end

-- A CA and a server certificate it signs, for the names in opts.dns (a string or list) and
-- the IP addresses in opts.ip; its subject is CN=opts.cn (default "moonlet test server").
-- With opts.intermediate the CA signs an intermediate CA that signs the server's
-- certificate, and the cert file holds the chain a server sends: the server's certificate,
-- then the intermediate's. Returns { dir, ca, cert, key } (file paths).
function _M.make_pki(dir, opts)
  opts = opts or {}
  local san = {}
  for _, n in ipairs(type(opts.dns) == "table" and opts.dns or { opts.dns }) do san[#san + 1] = "DNS:" .. n end
  for _, n in ipairs(type(opts.ip) == "table" and opts.ip or { opts.ip }) do san[#san + 1] = "IP:" .. n end
  local ec = { "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes" }
  local function req(extra)
    local a = { "req" }
    for _, x in ipairs(ec) do a[#a + 1] = x end
    for _, x in ipairs(extra) do a[#a + 1] = x end
    return a
  end
  openssl(dir, req{ "-x509", "-days", "2", "-subj", "/CN=moonlet test CA", "-keyout", "ca.key",
                    "-out", "ca.pem" })
  local signer = "ca"
  if opts.intermediate then
    openssl(dir, req{ "-subj", "/CN=moonlet test intermediate CA", "-keyout", "inter.key",
                      "-out", "inter.csr" })
    t.write_file(dir .. "/inter.ext", "basicConstraints=critical,CA:TRUE,pathlen:0\n"
                 .. "keyUsage=critical,keyCertSign,cRLSign\n")
    openssl(dir, { "x509", "-req", "-in", "inter.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                   "-CAcreateserial", "-days", "2", "-extfile", "inter.ext", "-out", "inter.pem" })
    signer = "inter"
  end
  openssl(dir, req{ "-subj", "/CN=" .. (opts.cn or "moonlet test server"), "-keyout", "server.key",
                    "-out", "server.csr" })
  t.write_file(dir .. "/server.ext", "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
               .. "extendedKeyUsage=serverAuth\nsubjectAltName=" .. concat(san, ",") .. "\n")
  openssl(dir, { "x509", "-req", "-in", "server.csr", "-CA", signer .. ".pem", "-CAkey",
                 signer .. ".key", "-CAcreateserial", "-days", "2", "-extfile", "server.ext",
                 "-out", "server.pem" })
  if opts.intermediate then   -- the chain: the server's certificate first
    t.write_file(dir .. "/server.pem", t.read_file(dir .. "/server.pem") .. t.read_file(dir .. "/inter.pem"))
  end
  return { dir = dir, ca = dir .. "/ca.pem", cert = dir .. "/server.pem", key = dir .. "/server.key" }
end

local Server = {}
Server.__index = Server

-- Ends the server (TERM, then KILL) and waits for it.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  os.execute(fmt("kill %d 2>/dev/null; sleep 0.1; kill -9 %d 2>/dev/null", self.pid, self.pid))
end

-- Starts `openssl s_server -WWW` with pki's certificate on 127.0.0.1 at a free port,
-- serving `files` (name -> content) from a fresh directory. Returns { port, pid, stop }
-- once it accepts connections; it ends by itself after opts.lifetime (default 120) s.
function _M.s_server(pki, files, opts)
  opts = opts or {}
  local www = t.tmpdir()
  for name, content in pairs(files or {}) do t.write_file(www .. "/" .. name, content) end
  local l = assert(t.listen(0))
  local port = l.port
  l:close()
  local pidfile = www .. "/.pid"
  os.execute(fmt("cd %s && ( timeout %d openssl s_server -quiet -WWW -accept 127.0.0.1:%d "
                 .. "-cert %s -key %s </dev/null >%s 2>&1 & echo $! >%s )",
                 q(www), opts.lifetime or 120, port, q(pki.cert), q(pki.key),
                 q(www .. "/.log"), q(pidfile)))
  local pid = tonumber((t.read_file(pidfile) or ""):match("%d+"))
  if not pid then error("s_server did not start", 2) end
  local srv = setmetatable({ port = port, pid = pid, dir = www }, Server)
  local deadline = t.now() + 10
  while true do
    local c = t.connect(port)
    if c then c:close(); return srv end
    if t.now() > deadline then
      srv:stop()
      error("s_server did not accept within 10 s: " .. tostring(t.read_file(www .. "/.log")), 2)
    end
    t.sleep(0.05)
  end
end

return _M
