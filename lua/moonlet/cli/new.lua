-- moonlet.cli.new: `moonlet new NAME` writes out a project to start from: NAME/app.lua (a
-- coroutine route and a pooled one, validated, JSON), NAME/app_spec.lua (its spec, on the
-- in-process test client) and NAME/README.md (how to serve, reload and test it). The
-- files are tools/new's, compiled in as moonlet.cli.template; "{{name}}" in them becomes
-- the project's name. NAME must not exist, or be an empty directory.
--
--   main(args)   args = { NAME }; returns the exit status (2: refused, nothing written;
--                or a file that could not be written, the ones before it left in place)
local ffi = require "ffi"
local cli = require "moonlet.cli"
local template = require "moonlet.cli.template"

local fmt, gsub, match, rep, sub =
  string.format, string.gsub, string.match, string.rep, string.sub
local sort = table.sort
local C = ffi.C

local _M = {}

ffi.cdef [[
  typedef struct moonlet_new_dir moonlet_new_dir;
  struct moonlet_new_dirent {   /* Linux (glibc, musl): d_name after these */
    unsigned long d_ino; long d_off; unsigned short d_reclen; unsigned char d_type;
    char d_name[256];
  };
  moonlet_new_dir *moonlet_new_opendir(const char *path) __asm__("opendir");
  struct moonlet_new_dirent *moonlet_new_readdir(moonlet_new_dir *d) __asm__("readdir");
  int moonlet_new_closedir(moonlet_new_dir *d) __asm__("closedir");
  int moonlet_new_mkdir(const char *path, unsigned int mode) __asm__("mkdir");
  char *moonlet_new_realpath(const char *path, char *resolved) __asm__("realpath");
  char *moonlet_new_strerror(int errnum) __asm__("strerror");
]]

local ENOENT, EEXIST, ENOTDIR = 2, 17, 20   -- Linux's errno values

local function strerror(e)
  return ffi.string(C.moonlet_new_strerror(e))
end

-- True if the open directory d holds nothing but "." and ".."; closes d.
local function is_empty(d)
  local empty = true
  while true do
    local e = C.moonlet_new_readdir(d)
    if e == nil then break end
    local name = ffi.string(e.d_name)
    if name ~= "." and name ~= ".." then
      empty = false
      break
    end
  end
  C.moonlet_new_closedir(d)
  return empty
end

-- Makes dir, or accepts it if it is an empty directory; nil, why otherwise.
local function make_dir(dir)
  if C.moonlet_new_mkdir(dir, tonumber("777", 8)) == 0 then return true end
  local e = ffi.errno()
  if e == ENOENT then
    return nil, "cannot create " .. dir .. ": its parent directory does not exist"
  elseif e ~= EEXIST then
    return nil, "cannot create " .. dir .. ": " .. strerror(e)
  end
  local d = C.moonlet_new_opendir(dir)
  if d == nil then
    e = ffi.errno()
    if e == ENOTDIR then return nil, dir .. " exists and is not a directory" end
    return nil, dir .. ": " .. strerror(e)
  end
  if not is_empty(d) then return nil, dir .. " exists and is not empty" end
  return true
end

-- The project's name: the directory's own ("." is the current directory's).
local function project_name(dir)
  local buf = ffi.new("char[4096]")
  local real = C.moonlet_new_realpath(dir, buf)
  local path = real ~= nil and ffi.string(real) or dir
  return match(path, "([^/]+)/*$") or "app"
end

local function write(path, text)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(text)
  f:close()
  if not ok then return nil, path .. ": " .. tostring(werr) end
  return true
end

local function fail(msg)
  return cli.fail("new: " .. msg)
end

function _M.main(args)
  local dir = cli.dir_arg(args, "new: expected one NAME, the directory to create "
                                .. "(moonlet new NAME)")
  if not dir then return 2 end
  local ok, why = make_dir(dir)
  if not ok then return fail(why) end
  local name = project_name(dir)
  -- in Lua files the name sits in a string: escaped as %q does, without its quotes
  local in_lua = sub(fmt("%q", name), 2, -2)
  local files = {}
  for file in pairs(template) do files[#files + 1] = file end
  sort(files)
  for _, file in ipairs(files) do
    local value = match(file, "%.lua$") and in_lua or name
    local text = gsub(template[file], "{{name}}", (gsub(value, "%%", "%%%%")))
    local path = dir .. "/" .. file
    local written, err = write(path, text)
    if not written then return fail(err) end
    io.stdout:write("created ", path, "\n")
  end
  local steps = {
    { "moonlet serve " .. dir .. " --reload",
      "serve it on http://127.0.0.1:8000, reloading on edits" },
    { "moonlet test " .. dir, "run its spec (app_spec.lua)" },
    { "moonlet routes " .. dir, "list its routes" },
  }
  io.stdout:write("\nNext:\n")
  for _, step in ipairs(steps) do
    io.stdout:write("  ", step[1], rep(" ", #steps[1][1] + 3 - #step[1]), step[2], "\n")
  end
  return 0
end

return _M
