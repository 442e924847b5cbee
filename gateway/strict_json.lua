-- The edge's strict JSON check, run before the gRPC-JSON transcoder (which drops unknown fields
-- and, on some `body: "*"` routes, passes malformed JSON on as an empty request). A request to a
-- route that takes a body must carry exactly one JSON object: well formed, no duplicate member
-- names, no member that is not a field of the message it becomes (at any depth). Anything else
-- is a 400 naming the problem. The schema (routes and message fields, from the contracts) is
-- prepended by gateway/strict_json.py as SCHEMA_ROUTES and SCHEMA_TYPES.

local NULL, SCALAR = {}, {}
local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
local MAX_DEPTH = 64

local function parse(text)
  local pos, len, depth = 1, #text, 0
  local function fail(message)
    error({ message = message }, 0)
  end
  local function skip()
    pos = string.find(text, "[^ \t\r\n]", pos) or (len + 1)
  end
  local value

  local function str()
    pos = pos + 1
    local parts = {}
    while true do
      local at = string.find(text, '["\\%z\001-\031]', pos)
      if not at then
        fail("malformed JSON: an unterminated string")
      end
      parts[#parts + 1] = string.sub(text, pos, at - 1)
      local c = string.sub(text, at, at)
      if c == '"' then
        pos = at + 1
        return table.concat(parts)
      elseif c ~= "\\" then
        fail("malformed JSON: a control character in a string")
      end
      local escape = string.sub(text, at + 1, at + 1)
      if ESCAPES[escape] then
        parts[#parts + 1] = ESCAPES[escape]
        pos = at + 2
      elseif escape == "u" and string.find(text, "^%x%x%x%x", at + 2) then
        local code = tonumber(string.sub(text, at + 2, at + 5), 16)
        parts[#parts + 1] = code < 128 and string.char(code) or "\239\191\189" -- no field name has it
        pos = at + 6
      else
        fail("malformed JSON: a bad escape in a string")
      end
    end
  end

  local function number()
    local first, last = string.find(text, "^-?0", pos)
    if not first then
      first, last = string.find(text, "^-?[1-9]%d*", pos)
    end
    if not first then
      fail("malformed JSON: unexpected character at byte " .. pos)
    end
    pos = last + 1
    if string.sub(text, pos, pos) == "." then
      first, last = string.find(text, "^%d+", pos + 1)
      if not first then
        fail("malformed JSON: a bad number")
      end
      pos = last + 1
    end
    if string.find(text, "^[eE]", pos) then
      first, last = string.find(text, "^[-+]?%d+", pos + 1)
      if not first then
        fail("malformed JSON: a bad number")
      end
      pos = last + 1
    end
    return SCALAR
  end

  local function nested(close, read)
    depth = depth + 1
    if depth > MAX_DEPTH then
      fail("malformed JSON: nested too deeply")
    end
    pos = pos + 1
    skip()
    if string.sub(text, pos, pos) == close then
      pos = pos + 1
    else
      while true do
        read()
        skip()
        local c = string.sub(text, pos, pos)
        pos = pos + 1
        if c == close then
          break
        elseif c ~= "," then
          fail("malformed JSON: expected ',' or '" .. close .. "' at byte " .. (pos - 1))
        end
        skip()
      end
    end
    depth = depth - 1
  end

  local function object()
    local members, order = {}, {}
    nested("}", function()
      if string.sub(text, pos, pos) ~= '"' then
        fail("malformed JSON: expected a member name at byte " .. pos)
      end
      local name = str()
      if members[name] ~= nil then
        error({ message = "duplicate member", member = name }, 0)
      end
      skip()
      if string.sub(text, pos, pos) ~= ":" then
        fail("malformed JSON: expected ':' at byte " .. pos)
      end
      pos = pos + 1
      skip()
      members[name] = value()
      order[#order + 1] = name
    end)
    return { members = members, order = order }
  end

  local function array()
    local items = {}
    nested("]", function()
      items[#items + 1] = value()
    end)
    return { items = items }
  end

  value = function()
    local c = string.sub(text, pos, pos)
    if c == "{" then
      return object()
    elseif c == "[" then
      return array()
    elseif c == '"' then
      str()
      return SCALAR
    elseif string.find(text, "^true", pos) or string.find(text, "^null", pos) then
      pos = pos + 4
      return c == "n" and NULL or SCALAR
    elseif string.find(text, "^false", pos) then
      pos = pos + 5
      return SCALAR
    elseif c == "" then
      fail("malformed JSON: the body ends too early")
    end
    return number()
  end

  skip()
  local result = value()
  skip()
  if pos <= len then
    fail("malformed JSON: unexpected data after the value at byte " .. pos)
  end
  return result
end

local SCHEMA = nil
local function schema()
  if SCHEMA == nil then
    SCHEMA = { routes = {}, types = {} }
    for method, pattern, kind in string.gmatch(SCHEMA_ROUTES, "(%S+) (%S+) (%S+)\n") do
      SCHEMA.routes[#SCHEMA.routes + 1] = { method = method, pattern = pattern, kind = kind }
    end
    for type_name, fields in string.gmatch(SCHEMA_TYPES, "(%S+)%s+{([^}]*)}") do
      local known = {}
      for field, kind in string.gmatch(fields, "(%S+)=(%S+)") do
        known[field] = kind
      end
      SCHEMA.types[type_name] = known
    end
  end
  return SCHEMA
end

local function safe(name)
  if #name <= 64 and string.find(name, "^[%w_]+$") then
    return '"' .. name .. '"'
  end
  return "a member"
end

-- kind: "s" (any JSON value; the transcoder checks its type), "m:<type>", "r:<kind>", "map:<kind>"
local function check(node, kind, path)
  if kind == "s" or node == NULL or node == SCALAR then
    return
  end
  local prefix, rest = string.match(kind, "^(%a+):(.*)$")
  if prefix == "r" then
    for i, item in ipairs(node.items or {}) do
      check(item, rest, path .. "[" .. (i - 1) .. "]")
    end
  elseif prefix == "map" then
    for _, name in ipairs(node.order or {}) do
      check(node.members[name], rest, path)
    end
  elseif prefix == "m" and node.members then
    local fields = schema().types[rest]
    for _, name in ipairs(node.order) do
      local field_kind = fields[name]
      if field_kind == nil then
        error({ message = "unknown field " .. safe(name) .. (path == "" and "" or " in " .. path) }, 0)
      end
      check(node.members[name], field_kind, path == "" and name or (path .. "." .. name))
    end
  end
end

local function route_of(method, path)
  for _, route in ipairs(schema().routes) do
    if route.method == method and string.find(path, route.pattern) then
      return route
    end
  end
  return nil
end

-- True when `s` is well-formed UTF-8: no stray continuation bytes, overlong forms, surrogates
-- (ED A0..BF) or code points past U+10FFFF.
local function valid_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    local extra
    if c < 0x80 then
      extra = 0
    elseif c >= 0xC2 and c <= 0xDF then
      extra = 1
    elseif c >= 0xE0 and c <= 0xEF then
      extra = 2
    elseif c >= 0xF0 and c <= 0xF4 then
      extra = 3
    else
      return false
    end
    if i + extra > n then
      return false
    end
    for k = 1, extra do
      local b = string.byte(s, i + k)
      if b < 0x80 or b > 0xBF then
        return false
      end
    end
    local c2 = string.byte(s, i + 1)
    local overlong = (c == 0xE0 and c2 < 0xA0) or (c == 0xF0 and c2 < 0x90)
    local surrogate_or_beyond = (c == 0xED and c2 > 0x9F) or (c == 0xF4 and c2 > 0x8F)
    if overlong or surrogate_or_beyond then
      return false
    end
    i = i + extra + 1
  end
  return true
end

local function unescaped(s)
  return (string.gsub(string.gsub(s, "%+", " "), "%%(%x%x)", function(hex)
    return string.char(tonumber(hex, 16))
  end))
end

-- The path and every query value must be UTF-8 once percent-decoded (a service would refuse them
-- too, naming the field; the edge says which part it is before any service sees them).
local function invalid_utf8_in(target)
  local path, query = string.match(target, "^([^?]*)%??(.*)$")
  if not valid_utf8(unescaped(path)) then
    return "the path is not valid UTF-8"
  end
  for pair in string.gmatch(query, "[^&]+") do
    local name, value = string.match(pair, "^([^=]*)=?(.*)$")
    if not valid_utf8(unescaped(name)) then
      return "a query parameter name is not valid UTF-8"
    end
    if not valid_utf8(unescaped(value)) then
      return "query parameter " .. safe(unescaped(name)) .. " is not valid UTF-8"
    end
  end
  return nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local problem = invalid_utf8_in(headers:get(":path") or "")
  if problem then
    handle:respond({ [":status"] = "400" }, problem)
    return
  end
  local method = headers:get(":method")
  if method ~= "POST" and method ~= "PATCH" and method ~= "PUT" then
    return
  end
  local path = string.match(headers:get(":path") or "", "^[^?]*")
  local route = route_of(method, path)
  if route == nil then
    return -- not a REST route with a body: the transcoder or the router answers
  end
  local body = handle:body()
  local text = body and body:getBytes(0, body:length()) or ""
  local ok, err = pcall(function()
    if string.find(text, "^[ \t\r\n]*$") then
      error({ message = "the body must be a JSON object (send {} for none)" }, 0)
    end
    local tree = parse(text)
    if tree == NULL or tree == SCALAR or tree.items then
      error({ message = "the body must be a JSON object" }, 0)
    end
    check(tree, route.kind, "")
  end)
  if not ok then
    local message = type(err) == "table" and err.message or "malformed JSON"
    if type(err) == "table" and err.member then
      message = "duplicate member " .. safe(err.member) .. " in the JSON body"
    end
    handle:respond({ [":status"] = "400" }, message)
  end
end
