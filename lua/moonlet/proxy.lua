-- req.client and req.scheme (lazy fields of request.lua): the peer's address and "http"
-- ("https" on a --tls-cert server), or, under --proxy-headers when the peer is in --forwarded-allow-ips, what the proxy says
-- in RFC 7239 Forwarded (first) or X-Forwarded-For / X-Forwarded-Proto. As uvicorn: the
-- client is the rightmost address of the chain that is not a trusted proxy (the leftmost
-- if all are); a forwarded client's port is 0 unless Forwarded gives one.
local core = require "moonlet.core"
local req_peer, req_header, req_scheme, proxy_conf = core.req_peer, core.req_header,
  core.req_scheme, core.proxy
local tonumber, ipairs, lower, match, gmatch = tonumber, ipairs, string.lower, string.match,
  string.gmatch

local _M = {}

-- "1.2.3.4:5678", "[::1]:5678", a bare address, or "-" -> host, port (0 if none)
local function split_addr(s)
  local h, p = match(s, "^%[(.*)%]:?(%d*)$")
  if not h then
    h, p = match(s, "^([^:]*):(%d+)$")
    h = h or s
  end
  return h, tonumber(p) or 0
end

local allow_str, allow_set   -- the last allow list read, as a set
local function trusted(host, allow)
  if allow ~= allow_str then
    allow_set = {}
    for item in gmatch(allow, "[^,]+") do allow_set[match(item, "^%s*(.-)%s*$")] = true end
    allow_str = allow
  end
  return allow_set["*"] or allow_set[host] or false
end

-- Forwarded: for=1.2.3.4;proto=https, for="[2001:db8::1]:4711" -> { {for=, proto=}, ... }
local function forwarded(v)
  local list = {}
  for elem in gmatch(v, "[^,]+") do
    local e = {}
    for k, val in gmatch(elem, "([%w_-]+)%s*=%s*(\"?[^;\"]*\"?)") do
      e[lower(k)] = match(val, '^"(.*)"$') or val
    end
    list[#list + 1] = e
  end
  return list
end

-- what a trusted proxy says: the client's address (string or nil) and the scheme (or nil)
local function from_proxy(r, g, allow)
  local fwd = req_header(r, g, "forwarded")
  local chain, proto = {}, nil
  if fwd then
    for _, e in ipairs(forwarded(fwd)) do
      if e["for"] then chain[#chain + 1] = e["for"] end
      if e.proto then proto = e.proto end
    end
  else
    local xff = req_header(r, g, "x-forwarded-for")
    if xff then
      for a in gmatch(xff, "[^,]+") do chain[#chain + 1] = match(a, "^%s*(.-)%s*$") end
    end
    local xfp = req_header(r, g, "x-forwarded-proto")
    if xfp then proto = match(xfp, "([^,%s]+)%s*$") end
  end
  local client
  for i = #chain, 1, -1 do
    client = chain[i]
    if not trusted((split_addr(chain[i])), allow) then break end
  end
  if proto then proto = match(lower(proto), "^%a[%w+.-]*$") end
  return client, proto
end

---@return {host: string, port: integer}
function _M.client(r, g)
  local peer = req_peer(r, g)
  local on, allow = proxy_conf()
  local host, port = split_addr(peer)
  if on and trusted(host, allow) then
    local fwd = from_proxy(r, g, allow)
    if fwd then host, port = split_addr(fwd) end
  end
  return { host = host, port = port }
end

---@return string
function _M.scheme(r, g)
  local on, allow = proxy_conf()
  if on and trusted((split_addr(req_peer(r, g))), allow) then
    local _, proto = from_proxy(r, g, allow)
    if proto then return proto end
  end
  return req_scheme(r, g)
end

return _M
