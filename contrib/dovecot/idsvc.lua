-- idsvc.lua: a Dovecot Lua passdb that lets idsvc verify the password, and a Lua userdb.
--
-- Dovecot hands the login and password to auth_password_verify(); this script POSTs them to
-- idsvc's [dovecot_lua] listener (a UNIX socket or loopback HTTP) and maps idsvc's answer to
-- a PASSDB_RESULT_*. App passwords, penalties, bind-through, caching and the audit trail stay
-- in idsvc; no password hash ever reaches Dovecot. Any transport problem (idsvc down, timeout,
-- garbled answer) is PASSDB_RESULT_INTERNAL_FAILURE: Dovecot says "temporary failure", never
-- "wrong password". auth_userdb_lookup() asks idsvc for home, mail, uid, gid and quota_rule
-- (idsvc's [mail] settings).
--
-- Needs: Lua 5.3/5.4 with luasocket and lua-cjson (Debian: dovecot-auth-lua lua-socket
-- lua-cjson). Works with Dovecot 2.3 (passdb { driver = lua; args = file=... blocking=yes })
-- and 2.4 (passdb lua { lua_file = ... }); see docs/dovecot.md.
--
-- Settings: edit the table below, or put a file named idsvc.conf.lua next to this script that
-- returns a table with the keys to change, e.g.  return { url = "http://127.0.0.1:8092" }
-- (Dovecot 2.4 can also pass them as lua_settings, which reach script_init).

local settings = {
  url = "unix:/run/idsvc/lua",   -- or "http://127.0.0.1:PORT" ([dovecot_lua] listen)
  timeout = 30,                  -- seconds; above idsvc's auth.failure_delay + auth.penalty_max
  secret = nil,                  -- [dovecot_lua] secret, when one is set
  secret_header = "X-Idsvc-Secret",
}

local MAX_REPLY = 65536

local socket = require("socket")
local cjson = require("cjson.safe")

local function merge(from)
  if type(from) ~= "table" then return end
  for key, value in pairs(from) do
    if settings[key] ~= nil or key == "secret" then settings[key] = value end
  end
  settings.timeout = tonumber(settings.timeout) or 30
end

local function load_local_settings()
  local source = debug.getinfo(1, "S").source
  local dir = source:match("^@(.*/)[^/]*$")
  if dir == nil then return end
  local path = dir .. "idsvc.conf.lua"
  local fh = io.open(path, "r")
  if fh == nil then return end
  fh:close()
  merge(dofile(path))
end

load_local_settings()

function script_init(args)
  merge(args)
  return 0
end

function script_deinit()
end

local RESULTS = {
  ok = dovecot.auth.PASSDB_RESULT_OK,
  password_mismatch = dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH,
  user_unknown = dovecot.auth.PASSDB_RESULT_USER_UNKNOWN,
  user_disabled = dovecot.auth.PASSDB_RESULT_USER_DISABLED,
  pass_expired = dovecot.auth.PASSDB_RESULT_PASS_EXPIRED,
  internal_failure = dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE,
}

-- one HTTP/1.0 POST; returns status, body or nil, error
local function post(path, payload)
  local sock, err, prefix
  local unix_path = settings.url:match("^unix:(/.+)$")
  if unix_path then
    local unix = require("socket.unix")
    sock, err = (unix.stream or unix)()
    if sock == nil then return nil, err end
    sock:settimeout(settings.timeout, "t")
    local ok, cerr = sock:connect(unix_path)
    if not ok then sock:close(); return nil, "connect " .. unix_path .. ": " .. tostring(cerr) end
    prefix = ""
  else
    local host, port, base = settings.url:match("^http://([%w%.%-%[%]:]-):(%d+)(/?.*)$")
    if host == nil then return nil, "bad url " .. settings.url end
    sock, err = socket.tcp()
    if sock == nil then return nil, err end
    sock:settimeout(settings.timeout, "t")
    local ok, cerr = sock:connect(host:gsub("^%[(.*)%]$", "%1"), tonumber(port))
    if not ok then sock:close(); return nil, "connect " .. settings.url .. ": " .. tostring(cerr) end
    prefix = base:gsub("/$", "")
  end
  local head = "POST " .. prefix .. path .. " HTTP/1.0\r\nHost: localhost\r\n"
    .. "Content-Type: application/json\r\nContent-Length: " .. #payload .. "\r\n"
  if settings.secret ~= nil then
    head = head .. settings.secret_header .. ": " .. settings.secret .. "\r\n"
  end
  local sent, serr = sock:send(head .. "\r\n" .. payload)
  if sent == nil then sock:close(); return nil, "send: " .. tostring(serr) end
  local data, rerr, partial = sock:receive(MAX_REPLY)
  sock:close()
  if data == nil then
    if rerr ~= "closed" then return nil, "receive: " .. tostring(rerr) end
    data = partial
  end
  local status = data:match("^HTTP/1%.%d (%d%d%d)")
  local body = data:match("\r\n\r\n(.*)$")
  if status == nil or body == nil then return nil, "malformed HTTP reply" end
  return tonumber(status), body
end

local function secured(req)
  local value = req.secured
  if type(value) == "boolean" then return value end
  return value ~= nil and value ~= "" and value ~= "no" and value ~= "0"
end

-- POST a JSON object; returns the decoded reply table, or nil and why
local function call(req, path, payload)
  local status, body = post(path, cjson.encode(payload))
  if status == nil then
    req:log_error("idsvc: " .. tostring(body))
    return nil, "idsvc unreachable"
  end
  local reply = cjson.decode(body)
  if status ~= 200 or type(reply) ~= "table" or type(reply.result) ~= "string" then
    req:log_error("idsvc: unexpected reply to " .. path .. " (HTTP " .. status .. ")")
    return nil, "idsvc failed"
  end
  return reply
end

function auth_password_verify(req, pass)
  local reply, err = call(req, "/passdb", {
    user = req.user,
    password = pass,
    service = req.service or req.protocol,   -- 2.4 calls it protocol
    remote_ip = req.remote_ip,
    local_ip = req.local_ip,
    secured = secured(req),
    mechanism = req.mech or req.mechanism,
  })
  if reply == nil or RESULTS[reply.result] == nil then
    return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, err or "idsvc failed"
  end
  if reply.result == "ok" and type(reply.user) == "string" then
    return RESULTS.ok, { user = reply.user }
  end
  return RESULTS[reply.result], {}
end

function auth_userdb_lookup(req)
  local reply, err = call(req, "/userdb", { user = req.user })
  if reply == nil then
    return dovecot.auth.USERDB_RESULT_INTERNAL_FAILURE, err
  end
  if reply.result == "ok" and type(reply.fields) == "table" then
    return dovecot.auth.USERDB_RESULT_OK, reply.fields
  end
  if reply.result == "user_unknown" then
    return dovecot.auth.USERDB_RESULT_USER_UNKNOWN, "no such user"
  end
  return dovecot.auth.USERDB_RESULT_INTERNAL_FAILURE, "idsvc failed"
end
