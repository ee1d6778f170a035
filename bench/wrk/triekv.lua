-- bench/wrk/triekv.lua - wrk script for triekv's HTTP benchmark.
-- Keys k000000..k(KEYS-1) are preloaded; each request picks one at random. MODE chooses the mix:
--   get   GET /kv/{key}
--   post  POST /kv/{key} with a 100-byte body
--   mix   95% GET, 5% POST
-- Set with: wrk ... -s triekv.lua <url> -- MODE [KEYS [DELAY_MS]]
-- DELAY_MS makes each connection wait that long between requests: a rate limit of about
-- connections * 1000 / DELAY_MS requests per second.
local mode, keys, pause = "get", 100000, 0
local body = string.rep("v", 100)

function init(args)
    mode = args[1] or mode
    keys = tonumber(args[2] or keys)
    pause = tonumber(args[3] or pause)
    math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

function request()
    local k = string.format("/kv/k%06d", math.random(0, keys - 1))
    if mode == "post" or (mode == "mix" and math.random(100) <= 5) then
        return wrk.format("POST", k, {["Content-Type"] = "application/octet-stream"}, body)
    end
    return wrk.format("GET", k)
end

function delay()
    return pause
end
