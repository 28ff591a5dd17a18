-- wrk script for bench/edge.sh: GET /{code} with a code picked at random from
-- the file given after `--` (one code a line, as seed-links writes it), with a
-- browser user agent, and a one-line machine-readable summary at the end:
--
--   wrk -t2 -c64 -d15s --latency -s bench/random-codes.lua http://127.0.0.1:PORT -- codes.txt
--
-- The same script drives the bare server and the edge, so both pay the same
-- client-side cost.

local threads = 0

function setup(thread)
    threads = threads + 1
    thread:set("thread_id", threads)
end

local codes = {}
local user_agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    .. "Chrome/120.0.0.0 Safari/537.36"

function init(args)
    local path = args[1] or os.getenv("BENCH_CODES")
    if path == nil then
        error("random-codes.lua: pass the codes file after --")
    end
    for line in io.lines(path) do
        if #line > 0 then
            codes[#codes + 1] = "/" .. line
        end
    end
    if #codes == 0 then
        error("random-codes.lua: no codes in " .. path)
    end
    math.randomseed(os.time() * 1000 + (thread_id or 0))
    wrk.headers["User-Agent"] = user_agent
end

function request()
    return wrk.format("GET", codes[math.random(#codes)])
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "wrk_result requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d "
            .. "connect_errors=%d read_errors=%d write_errors=%d timeouts=%d non_2xx_3xx=%d\n",
        summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
        e.connect, e.read, e.write, e.timeout, e.status))
end
