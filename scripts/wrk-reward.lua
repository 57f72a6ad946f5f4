-- wrk script for scripts/wrk-http.sh: every request is
-- POST /players/{id}/reward {"points":1} for a random player among
-- PLAYERS (default 1000) named PREFIX<n> (PREFIX default "p").
local players = tonumber(os.getenv("PLAYERS") or "1000")
local prefix = os.getenv("PREFIX") or "p"
local headers = { ["Content-Type"] = "application/json" }
local body = '{"points":1}'

function setup(thread)
  thread:set("seed", math.random(1, 1e9))
end

function init(args)
  math.randomseed(seed or os.time())
end

function request()
  local p = prefix .. math.random(players)
  return wrk.format("POST", "/players/" .. p .. "/reward", headers, body)
end
