-- bench/wrk/webdis.lua - the same workloads against Redis behind webdis (the peer HTTP store):
--   get   GET /GET/{key}         post  PUT /SET/{key} with a 100-byte body        mix   95/5
local mode, keys = "get", 100000
local body = string.rep("v", 100)

function init(args)
    mode = args[1] or mode
    keys = tonumber(args[2] or keys)
    math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

function request()
    local k = string.format("k%06d", math.random(0, keys - 1))
    if mode == "post" or (mode == "mix" and math.random(100) <= 5) then
        return wrk.format("PUT", "/SET/" .. k, nil, body)
    end
    return wrk.format("GET", "/GET/" .. k)
end
