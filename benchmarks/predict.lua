-- wrk script of benchmarks/api_throughput.py: POST /predict with a few valid JSON bodies
-- (pre-formatted once, so wrk spends its time sending, not building requests), and a
-- one-line JSON summary at the end for the Python driver to parse.

local bodies = {
  '{"Gender": "Female", "Age": 45, "EstimatedSalary": 90000}',
  '{"Gender": "Male", "Age": 19, "EstimatedSalary": 19000}',
  '{"Gender": "male", "Age": 37.5, "EstimatedSalary": 137000}',
  '{"Gender": " FEMALE ", "Age": 60, "EstimatedSalary": 42000}',
}
local prepared = {}
local counter = 0

init = function(args)
  local headers = { ["Content-Type"] = "application/json" }
  for i, body in ipairs(bodies) do
    prepared[i] = wrk.format("POST", "/predict", headers, body)
  end
end

request = function()
  counter = counter % #prepared + 1
  return prepared[counter]
end

done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
