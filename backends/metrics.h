/* The daemon's counters for `/.metrics` (SPEC §8): per deployment, the
 * attempts by outcome, their durations and times to first byte, retries,
 * failovers, tokens and cost; and the jobs queued and in flight and the
 * reads parked.
 *
 * Updating takes no lock: every figure is an atomic, so the engine
 * thread, the finisher threads and FUSE threads count without waiting on
 * each other or on a reader, and a submission never waits on a reader.
 * Reading (metrics_snapshot_take) takes no lock either: it copies the
 * atomics into plain memory, which fs/metrics.c then writes out.
 *
 * The deployments are registered once, from the config, before any
 * thread that counts starts (metrics_init), and stay until they have all
 * stopped (metrics_free). A deployment that was not registered, or a
 * call before metrics_init, counts nowhere. */
#ifndef PROMPTFS_METRICS_H
#define PROMPTFS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "backends/engine.h"
#include "mountopts/config.h"

/* A histogram's upper bounds, in milliseconds, with the text of each
 * bound as Prometheus's `le` label; +Inf follows the last. */
#define METRICS_MAX_BUCKETS 16
struct metrics_buckets {
	size_t n;
	long le_ms[METRICS_MAX_BUCKETS];
	const char *le_text[METRICS_MAX_BUCKETS];
};

/* promptfs_attempt_duration_seconds and promptfs_time_to_first_byte_seconds */
extern const struct metrics_buckets metrics_duration_buckets;
extern const struct metrics_buckets metrics_ttfb_buckets;

/* promptfs_circuit_state: the breaker's view of a deployment
 * (enum breaker_state, as Prometheus shows it). */
enum metrics_circuit {
	METRICS_CIRCUIT_CLOSED = 0,
	METRICS_CIRCUIT_OPEN = 1,
	METRICS_CIRCUIT_HALF_OPEN = 2,
};

/* Registers every deployment of CFG, in config order (the order
 * /.metrics lists them in). 0, or -ENOMEM. Before any thread counts. */
int metrics_init(const struct config *cfg);
/* The same for a list of N deployments (unit tests). */
int metrics_init_models(const struct model *const *models, size_t n);
/* Once nothing counts or reads any more. */
void metrics_free(void);

/* ---- what the engine counts (backends/engine*.c) ---- */

/* A job was handed to the engine: it is queued until its attempt starts. */
void metrics_job_queued(void);
/* An attempt starts on MODEL; PREVIOUS is where the job's previous
 * attempt went (NULL for its first). Its attempt is in flight now. An
 * attempt on the deployment of the previous one is a retry there; on
 * another one, a failover from PREVIOUS. */
void metrics_attempt_started(const struct model *model, const struct model *previous);
/* The attempt REPORT describes ended: its outcome, its duration and,
 * when a first byte came, its time to first byte. The job is queued
 * again until its next attempt starts or it ends. */
void metrics_attempt_ended(const struct engine_attempt_report *report);
/* The engine is done with a job (metrics_job_queued). */
void metrics_job_ended(void);

/* ---- what fs/ counts ---- */

/* A job that MODEL answered (or, failed, whose last attempt went there)
 * ended and was charged: its tokens and its cost in nano-dollars. */
void metrics_job_charged(const struct model *model, uint64_t input_tokens, uint64_t output_tokens,
			 int64_t cost_nusd);
/* A read of a .response was parked (+1) or answered (-1). */
void metrics_parked_readers_add(int delta);

/* ---- reading ---- */

/* One histogram as read: COUNT[i] observations at or below bucket i's
 * bound (cumulative), COUNT[n] (+Inf) every observation; the sum in
 * milliseconds. */
struct metrics_histogram_view {
	uint64_t cumulative[METRICS_MAX_BUCKETS + 1];
	uint64_t sum_ms;
};

/* One outcome word of .meta ("ok", "http_503", "timeout" ...) and how
 * many attempts ended with it. */
struct metrics_outcome_view {
	char word[32];
	uint64_t count;
};

/* Distinct outcomes kept per deployment; attempts with yet another one
 * are counted as "other". */
#define METRICS_OUTCOME_SLOTS 32

struct metrics_deployment_view {
	const struct model *model;
	/* "ok" always first (0 or not), then the others seen, by word */
	struct metrics_outcome_view outcomes[METRICS_OUTCOME_SLOTS + 2];
	size_t n_outcomes;
	struct metrics_histogram_view duration, ttfb;
	uint64_t retries, failovers;
	uint64_t input_tokens, output_tokens;
	int64_t cost_nusd;
	enum metrics_circuit circuit; /* from metrics_snapshot_add_circuits */
	unsigned long circuit_opens;
};

struct metrics_snapshot {
	struct metrics_deployment_view *deployments; /* owned */
	size_t n_deployments;
	uint64_t jobs_queued, jobs_in_flight, parked_readers;
};

/* Copies every figure now into OUT, every circuit closed. 0, or
 * -ENOMEM. Release with metrics_snapshot_release. */
int metrics_snapshot_take(struct metrics_snapshot *out);
/* Puts the circuit breakers' states into S: the N entries of
 * engine_breaker_snapshot(); a deployment without one stays closed. */
void metrics_snapshot_add_circuits(struct metrics_snapshot *s,
				   const struct engine_breaker_entry *entries, size_t n);
void metrics_snapshot_release(struct metrics_snapshot *s);

#endif
