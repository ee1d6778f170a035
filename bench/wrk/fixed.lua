-- bench/wrk/fixed.lua - GET of one fixed path (for the h2o ceiling server, which answers anything).
function request()
    return wrk.format("GET", "/kv/k000001")
end
