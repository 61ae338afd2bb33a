-- A throwaway nginx for the specs: its own prefix in a private temp dir, one worker
-- process, on a free port of 127.0.0.1, in the foreground under t.spawn (so it is stopped
-- with the spec file, like every process the specs start).
--   local nginx = require "tests.support.nginx"
--   local ng = nginx.start(site)    -- raises if it cannot
--   ng.port        where it listens
--   ng:access()    the access log so far: { { status =, request =, upstream = { "addr", ... },
--                  upstream_status = { "200", ... } }, ... } (several upstreams: it retried)
--   ng:reload(site)  runs another site (SIGHUP), returns once the old worker has finished
--                  its requests and exited: every request after that runs the new one
--   ng:stop()      stops it at once (its processes are gone when it returns)
-- site: the lines of nginx's http block to run (upstream, map, server blocks): the file a
-- deployment would put in /etc/nginx/conf.d/. Its first `listen PORT;` is replaced by the
-- free port on 127.0.0.1.
local t = require "moonlet.testing"

local fmt, gsub, match, gmatch = string.format, string.gsub, string.match, string.gmatch

local _M = {}
local Nginx = {}
local nginx_mt = { __index = Nginx }

local CONNS = 4096     -- worker_connections: a client and an upstream connection each

local function binary()
  for _, p in ipairs{ "/usr/sbin/nginx", "/usr/bin/nginx" } do
    if t.read_file(p) then return p end
  end
  error("nginx not found (scripts/deps.sh test installs nginx-light)", 3)
end

-- Only the temp paths of modules this nginx has (nginx-light lacks some): a path for a
-- module it was built without is an unknown directive.
local function temp_paths(bin, dir)
  local v = t.run({ "-V" }, { bin = bin }).stderr
  local lines = {}
  for _, m in ipairs{ "client_body", "proxy", "fastcgi", "uwsgi", "scgi" } do
    if m == "client_body" or not v:find("--without-http_" .. m .. "_module", 1, true) then
      lines[#lines + 1] = fmt("    %s_temp_path %s/%s;", m, dir, m)
    end
  end
  return table.concat(lines, "\n")
end

local function main_conf(dir, temps)
  return fmt([[
worker_processes 1;
worker_rlimit_nofile %d;
pid %s/nginx.pid;
error_log %s/error.log notice;
events { worker_connections %d; }
http {
    log_format spec '$status "$request" "$upstream_addr" "$upstream_status"';
    access_log %s/access.log spec;
%s
    include %s/site.conf;
}
]], CONNS * 2 + 64, dir, dir, CONNS, dir, temps, dir)
end

-- The site with our port in its first `listen` line.
local function site_conf(site, port, level)
  local conf, n = gsub(site, "listen%s+[^;]+;", "listen 127.0.0.1:" .. port .. ";", 1)
  if n ~= 1 then error("the site has no `listen PORT;` line", level + 1) end
  return conf
end

function _M.start(site)
  local bin = binary()
  local dir = t.tmpdir()
  os.execute("chmod 755 " .. t.shell_quote(dir))   -- run as root, its worker is `nobody`
  t.write_file(dir .. "/nginx.conf", main_conf(dir, temp_paths(bin, dir)))
  local last
  for _ = 1, 5 do                -- another process may take the free port first
    local port = t.free_port()
    local conf = site_conf(site, port, 2)
    t.write_file(dir .. "/site.conf", conf)
    local p = t.spawn({ "-p", dir .. "/", "-e", dir .. "/error.log", "-c", dir .. "/nginx.conf",
                        "-g", "daemon off;" }, { bin = bin })
    local self = setmetatable({ port = port, dir = dir, proc = p, site = conf }, nginx_mt)
    local deadline = t.now() + 10
    while t.now() < deadline and not p:poll() do
      local c = t.connect(port)
      if c then c:close(); return self end
      t.sleep(0.02)
    end
    p:kill()
    p:finish()
    last = (t.read_file(dir .. "/error.log") or "") .. p:stderr()
    if not last:find("Address already in use", 1, true) then break end
  end
  error("nginx did not start:\n" .. tostring(last), 2)
end

function Nginx:access()
  local out = {}
  for line in gmatch(t.read_file(self.dir .. "/access.log") or "", "[^\n]+") do
    local status, request, addrs, codes = match(line, '^(%d+) "(.-)" "(.-)" "(.-)"$')
    if status then
      local e = { status = tonumber(status), request = request, upstream = {},
                  upstream_status = {} }
      for a in gmatch(addrs, "[^,%s]+") do e.upstream[#e.upstream + 1] = a end
      for c in gmatch(codes, "[^,%s]+") do e.upstream_status[#e.upstream_status + 1] = c end
      out[#out + 1] = e
    end
  end
  return out
end

function Nginx:reload(site)
  local conf = site_conf(site, self.port, 2)
  local log = self.dir .. "/error.log"
  local from = #(t.read_file(log) or "") + 1
  t.write_file(self.dir .. "/site.conf", conf)
  assert(self.proc:signal("HUP"))
  local deadline = t.now() + 15
  while t.now() < deadline do
    local text = (t.read_file(log) or ""):sub(from)
    if text:find("[emerg]", 1, true) then error("nginx refused the site:\n" .. text, 2) end
    -- the master starts a new worker with the site, then the old one drains and exits
    if text:find("start worker process", 1, true) and text:find("exited with code 0", 1, true)
    then
      self.site = conf
      return self
    end
    t.sleep(0.02)
  end
  error("nginx did not reload within 15 s:\n" .. (t.read_file(log) or ""):sub(from), 2)
end

function Nginx:stop()
  if self.proc then self.proc:stop(5) end
  self.proc = nil
end

return _M
