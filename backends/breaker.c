/* The circuit breaker's state machine (see breaker.h). */
#include "backends/breaker.h"

void breaker_config_default(struct breaker_config *c)
{
	c->threshold = BREAKER_THRESHOLD;
	c->cooldown_s = BREAKER_COOLDOWN_S;
	c->cooldown_max_s = BREAKER_COOLDOWN_MAX_S;
}

const char *breaker_state_word(enum breaker_state s)
{
	switch (s) {
	case BREAKER_OPEN:
		return "open";
	case BREAKER_HALF_OPEN:
		return "half_open";
	default:
		return "closed";
	}
}

enum breaker_verdict breaker_peek(const struct breaker *b, double now)
{
	switch (b->state) {
	case BREAKER_OPEN:
		return now >= b->open_until ? BREAKER_PROBE : BREAKER_SKIP;
	case BREAKER_HALF_OPEN:
		return b->probing ? BREAKER_SKIP : BREAKER_PROBE;
	default:
		return BREAKER_PASS;
	}
}

enum breaker_verdict breaker_admit(struct breaker *b, double now)
{
	enum breaker_verdict verdict = breaker_peek(b, now);

	if (verdict == BREAKER_PROBE) {
		b->state = BREAKER_HALF_OPEN;
		b->probing = 1;
	}
	return verdict;
}

double breaker_next_cooldown_s(const struct breaker *b, const struct breaker_config *c)
{
	double cooldown = c->cooldown_s;
	unsigned i;

	/* doubling stops at the cap, so many openings cannot overflow */
	for (i = 0; i < b->openings && cooldown < c->cooldown_max_s; i++)
		cooldown *= 2;
	return cooldown > c->cooldown_max_s ? c->cooldown_max_s : cooldown;
}

static void breaker_open(struct breaker *b, const struct breaker_config *c, double now)
{
	b->open_until = now + breaker_next_cooldown_s(b, c);
	b->state = BREAKER_OPEN;
	b->probing = 0;
	b->openings++;
	b->opened_total++;
}

int breaker_record(struct breaker *b, const struct breaker_config *c, enum breaker_result result,
		   int probe, double now)
{
	enum breaker_state before = b->state;
	unsigned failures_before = b->failures;

	switch (result) {
	case BREAKER_SUCCESS:
		/* any whole answer shows the deployment serves again, the
		 * probe's or that of an attempt that started before it opened */
		b->state = BREAKER_CLOSED;
		b->failures = 0;
		b->openings = 0;
		b->probing = 0;
		b->open_until = 0;
		break;
	case BREAKER_FAILURE:
		if (b->failures < ~0u)
			b->failures++;
		if (b->state == BREAKER_CLOSED && b->failures >= c->threshold)
			breaker_open(b, c, now);
		else if (b->state == BREAKER_HALF_OPEN && probe)
			breaker_open(b, c, now);
		/* other failures while open were in flight when it opened:
		 * they count, but do not lengthen the cool-down */
		break;
	case BREAKER_NEUTRAL:
		if (b->state == BREAKER_HALF_OPEN && probe)
			b->probing = 0;
		break;
	}
	return b->state != before || b->failures != failures_before;
}
