/* Circuit breaking (SPEC §7): a deployment whose attempts keep failing
 * is skipped for a cool-down, then probed with one request; a success
 * brings it back.
 *
 * One struct breaker per deployment, a pure state machine: the caller
 * passes the time (any clock that only moves forward: the engine's
 * monotonic seconds, a test's own), so tests drive it without sleeping.
 * The engine keeps one per deployment it has sent to (engine_health.c),
 * on its own thread; others read copies (engine_breaker_snapshot). */
#ifndef PROMPTFS_BREAKER_H
#define PROMPTFS_BREAKER_H

/* The numbers of docs/contract.md. */
#define BREAKER_THRESHOLD 5	     /* failed attempts in a row that open the circuit */
#define BREAKER_COOLDOWN_S 30.0	     /* the first cool-down */
#define BREAKER_COOLDOWN_MAX_S 300.0 /* doubling stops here */

struct breaker_config {
	unsigned threshold;
	double cooldown_s;
	double cooldown_max_s;
};

/* The numbers above. */
void breaker_config_default(struct breaker_config *c);

enum breaker_state {
	BREAKER_CLOSED,	   /* requests go */
	BREAKER_OPEN,	   /* cooling down: requests are skipped */
	BREAKER_HALF_OPEN, /* cooled down: one probe may go, or has gone */
};

/* "closed", "open", "half_open". */
const char *breaker_state_word(enum breaker_state s);

/* What an attempt on the deployment may do now. */
enum breaker_verdict {
	BREAKER_PASS,  /* go */
	BREAKER_PROBE, /* go, as the one probe of a half-open circuit */
	BREAKER_SKIP,  /* do not send: the circuit is open, or its probe is out */
};

/* How an attempt ended, for the circuit. */
enum breaker_result {
	BREAKER_SUCCESS, /* an answer came whole */
	BREAKER_FAILURE, /* a fault of the deployment (outcome_breaker_result) */
	BREAKER_NEUTRAL, /* says nothing of the deployment (the request's own fault, a cancel) */
};

struct breaker {
	enum breaker_state state;
	unsigned failures;	    /* failed attempts in a row */
	unsigned openings;	    /* times opened since the last success: the cool-down doubles */
	unsigned long opened_total; /* times opened, ever */
	double open_until;	    /* while open: when the probe may go */
	int probing;		    /* half open: the probe is out */
};

/* What breaker_admit would say at NOW, changing nothing. */
enum breaker_verdict breaker_peek(const struct breaker *b, double now);

/* The verdict for an attempt about to start at NOW. An open circuit
 * whose cool-down is over turns half open and gives this attempt the
 * probe (BREAKER_PROBE): the caller must then report its end with
 * breaker_record(..., probe = 1), or breaker_record(NEUTRAL, probe = 1)
 * if it is never sent. */
enum breaker_verdict breaker_admit(struct breaker *b, double now);

/* An attempt admitted earlier (PROBE: it was the probe) ended at NOW
 * with RESULT. A success closes the circuit and forgets the failures;
 * a failure counts, and opens a closed circuit at the threshold (for
 * the cool-down, doubled for each opening since the last success,
 * capped) or opens a half-open one again when it was the probe; a
 * neutral end of the probe lets the next attempt probe instead.
 * Returns 1 when the state changed. */
int breaker_record(struct breaker *b, const struct breaker_config *c, enum breaker_result result,
		   int probe, double now);

/* The cool-down the next opening of B gets under C. */
double breaker_next_cooldown_s(const struct breaker *b, const struct breaker_config *c);

#endif
