# meta-report.awk: what the jobs in some directories of a promptfs mount
# did and cost, by deployment, from their .meta files.
#
#   find /mnt/ai/openai/us/gpt-4o/nightly -name '*.meta' -exec awk -f meta-report.awk {} +
#
# One line per deployment (the .meta's "route"; for a failed job, the target
# of its last attempt; "-" for a job not started yet), sorted, then the
# total:
#
#   route                        done failed running  in_tokens out_tokens      cost_usd
#   openai/us/gpt-4o                3      1       0         42        120   0.001305000
#   total                           3      1       0         42        120   0.001305000
#
# "running" counts jobs still queued or running, and cancelled ones. A
# .meta is one line of compact JSON; its money is in fixed decimal
# (0.0000036, never 3.6e-06), so plain awk reads every field it needs by
# pattern. POSIX awk: Debian's mawk and gawk both run it. Reading .meta
# files never fails on a failed job, unlike reading its .response.

# value(NAME): the value of "NAME": in this record, without quotes; "" if
# it is not there. The first occurrence wins: "status", "route", "usage"
# and "cost_usd" are top-level keys, and the attempts hold no such names.
function value(name,    start, rest) {
	if (!match($0, "\"" name "\": *")) return ""
	rest = substr($0, RSTART + RLENGTH)
	if (substr(rest, 1, 1) == "\"") {
		rest = substr(rest, 2)
		return substr(rest, 1, index(rest, "\"") - 1)
	}
	match(rest, /^[0-9.]+/)
	return substr(rest, 1, RLENGTH)
}

# last_target(): the "target" of the last attempt, "-" if none.
function last_target(    rest, found) {
	found = "-"
	rest = $0
	while (match(rest, /"target": *"[^"]*"/)) {
		found = substr(rest, RSTART, RLENGTH)
		sub(/^"target": *"/, "", found)
		sub(/"$/, "", found)
		rest = substr(rest, RSTART + RLENGTH)
	}
	return found
}

/"status"/ {
	status = value("status")
	route = value("route")
	if (route == "") route = last_target()
	routes[route] = 1
	if (status == "done") done[route]++
	else if (status == "failed") failed[route]++
	else running[route]++
	in_tokens[route] += value("input_tokens")
	out_tokens[route] += value("output_tokens")
	cost[route] += value("cost_usd")
}

END {
	format = "%-26s %6s %6s %7s %10s %10s %13s\n"
	printf format, "route", "done", "failed", "running", "in_tokens", "out_tokens", "cost_usd"
	for (route in routes) {
		printf "%-26s %6d %6d %7d %10d %10d %13.9f\n", route, done[route], failed[route],
			running[route], in_tokens[route], out_tokens[route], cost[route] | "LC_ALL=C sort"
		total_done += done[route]
		total_failed += failed[route]
		total_running += running[route]
		total_in += in_tokens[route]
		total_out += out_tokens[route]
		total_cost += cost[route]
	}
	close("LC_ALL=C sort")
	printf "%-26s %6d %6d %7d %10d %10d %13.9f\n", "total", total_done, total_failed,
		total_running, total_in, total_out, total_cost
}
