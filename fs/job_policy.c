/* What the policies along a prompt's path do to its job (SPEC §6.2,
 * §6.4): whether the deployment may serve it, the limits it is refused
 * for, the defaults it gets, the retries and timeouts of its plan, and
 * its reservation in the budgets on its path (the ledger). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "fs/job_internal.h"
#include "fs/log.h"
#include "fs/policy_store.h"
#include "fs/prompt.h"

/* The largest answer the request may get: its own max_tokens (already
 * capped by policy), else the deployment's cap; 0 when nothing bounds it. */
static long max_output_tokens(const struct llm_request *req, const struct model *model)
{
	return route_output_bound(model, req->max_tokens);
}

/* The cost cap of E for REQ on MODEL in DIR: 0, or -EDQUOT with the
 * reason. */
static int check_cost(struct node *dir, const struct effective_policy *e,
		      const struct llm_request *req, const struct model *model, char *why,
		      size_t size)
{
	long out_tokens = max_output_tokens(req, model);
	long in_bytes = prompt_bytes_for_cost(req);
	char where[512], cap[32], most[32];
	double worst;

	if (!e->has_max_request_usd)
		return 0;
	worst = model->price.known ? policy_worst_case_usd((size_t)in_bytes, 0, 0, out_tokens,
							   model->price.input_per_mtok,
							   model->price.output_per_mtok)
				   : 0;
	if (model->price.known && worst <= e->max_request_usd)
		return 0;
	/* refused: the sentence names the .policy that set the cap; money
	 * in fixed decimal, as everywhere */
	policy_store_deciding_file(dir, POLICY_MAX_REQUEST_USD, where, sizeof(where));
	nusd_format(nusd_round(e->max_request_usd), cap, sizeof(cap));
	if (!model->price.known)
		snprintf(why, size,
			 "refused by %s: max_request_usd %s applies, and the price of %s/%s/%s is "
			 "not known",
			 where, cap, model->region->cloud->name, model->region->name, model->name);
	else if (isinf(worst))
		snprintf(why, size,
			 "refused by %s: max_request_usd %s, and nothing bounds the answer's "
			 "tokens (set max_tokens or max_output_tokens)",
			 where, cap);
	else
		snprintf(why, size,
			 "refused by %s: max_request_usd %s, this request may cost up to %s "
			 "(%ld bytes in, up to %ld tokens out)",
			 where, cap, nusd_format(nusd_ceil(worst), most, sizeof(most)), in_bytes,
			 out_tokens);
	return -EDQUOT;
}

/* The request an empty text prompt makes under E: one empty user
 * message, with E's system message and token cap. 0 or -ENOMEM. */
static int empty_request(const struct effective_policy *e, struct llm_request *req)
{
	memset(req, 0, sizeof(*req));
	req->messages = calloc(1, sizeof(*req->messages));
	if (!req->messages)
		return -ENOMEM;
	req->n_messages = 1;
	req->messages[0].role = strdup("user");
	req->messages[0].content = strdup("");
	if (!req->messages[0].role || !req->messages[0].content ||
	    prompt_apply_defaults(req, e->system, e->has_temperature, e->temperature,
				  e->max_output_tokens) < 0) {
		llm_request_release(req);
		return -ENOMEM;
	}
	return 0;
}

static double worst_case(const struct llm_request *req, const struct model *model);

int job_policy_route(struct node *dir, const struct effective_policy *e, struct route *route,
		     char *why, size_t size)
{
	int rc = route_plan(dir, e, 0, 0, route, why, size);
	const struct model *pinned;
	const char *geo, *family;

	/* a pinned path's refusal names the .policy that excludes it */
	if (rc == -EACCES && node_route(dir, &pinned, &geo, &family) == 0 && pinned) {
		rc = policy_store_check_deployment(dir, pinned, why, size);
		if (rc == 0) {
			snprintf(why, size, "refused by the policies of this directory");
			rc = -EACCES;
		}
	}
	return rc;
}

int job_policy_admit(struct node *dir, const struct effective_policy *e, size_t prompt_len,
		     struct llm_request *req, struct route *route, struct job_limits *limits,
		     char *why, size_t size)
{
	char where[512];
	size_t kept = 0;
	int rc;

	if ((long)prompt_len > e->max_prompt_bytes) {
		policy_store_deciding_file(dir, POLICY_MAX_PROMPT_BYTES, where, sizeof(where));
		snprintf(why, size, "refused by %s: max_prompt_bytes %ld, the prompt has %zu bytes",
			 where, e->max_prompt_bytes, prompt_len);
		return -EFBIG;
	}
	/* a JSON prompt's own temperature and system win; the cap never
	 * rises */
	rc = prompt_apply_defaults(req, e->system, e->has_temperature, e->temperature,
				   e->max_output_tokens);
	if (rc < 0) {
		snprintf(why, size, "out of memory");
		return rc;
	}
	rc = job_policy_route(dir, e, route, why, size);
	if (rc < 0)
		return rc;
	/* the order by price needs the request's size */
	if (e->order == POLICY_ORDER_PRICE)
		route_plan(dir, e, prompt_bytes_for_cost(req), req->max_tokens, route, why, size);
	/* candidates whose worst case passes the cost cap; the first
	 * refusal is the one told when none does */
	for (size_t i = 0; i < route->n; i++) {
		char reason[512];

		if (check_cost(dir, e, req, route->models[i], kept || i ? reason : why,
			       kept || i ? sizeof(reason) : size) == 0)
			route->models[kept++] = route->models[i];
	}
	route->n = kept;
	if (!kept)
		return -EDQUOT;
	limits->retries = e->retries;
	limits->timeout_s = e->timeout_s > 0 ? e->timeout_s : pfs.opts->timeout_s;
	limits->first_token_timeout_s = e->first_token_timeout_s;
	return 0;
}

enum prompt_format job_policy_format_of(const struct effective_policy *e)
{
	if (e->prompt_format == POLICY_FORMAT_TEXT)
		return PROMPT_FORMAT_TEXT;
	if (e->prompt_format == POLICY_FORMAT_JSON)
		return PROMPT_FORMAT_JSON;
	return PROMPT_FORMAT_AUTO;
}

enum prompt_format job_policy_prompt_format(struct node *dir)
{
	enum prompt_format format = PROMPT_FORMAT_AUTO;
	struct effective_policy e;

	if (policy_store_effective(dir, &e) == 0)
		format = job_policy_format_of(&e);
	effective_release(&e);
	return format;
}

mode_t job_policy_umask(struct node *dir)
{
	struct effective_policy e;
	mode_t mask = 0;

	if (policy_store_effective(dir, &e) == 0)
		mask = (mode_t)(e.umask & 0777);
	effective_release(&e);
	return mask;
}

/* The most text bytes a prompt may have before its worst case on MODEL
 * under E exceeds max_request_usd: SIZE_MAX without the cap, 0 when even
 * an empty one does (or its cost cannot be bounded). */
static size_t cost_cap_bytes(const struct effective_policy *e, const struct model *model)
{
	const struct price *price;
	struct llm_request req = { 0 };
	double fixed, room;
	long base, out;
	size_t bytes;

	if (!e->has_max_request_usd || !model)
		return SIZE_MAX;
	price = &model->price;
	if (!price->known || empty_request(e, &req) < 0)
		return 0;
	/* the worst case of the empty prompt: system, framing, the answer */
	fixed = worst_case(&req, model);
	base = prompt_bytes_for_cost(&req);
	out = max_output_tokens(&req, model);
	llm_request_release(&req);
	if (isinf(fixed) || fixed > e->max_request_usd)
		return 0;
	if (price->input_per_mtok <= 0)
		return SIZE_MAX;
	room = (e->max_request_usd - fixed) * 1e6 / price->input_per_mtok;
	if (room >= 1e15)
		return SIZE_MAX;
	/* settled with the very sum close() checks, so the two agree to
	 * the byte whatever the rounding */
	bytes = (size_t)floor(room + 0.5);
#define WORST(b)                                                                    \
	policy_worst_case_usd((size_t)base + (b), 0, 0, out, price->input_per_mtok, \
			      price->output_per_mtok)
	while (bytes > 0 && WORST(bytes) > e->max_request_usd)
		bytes--;
	while (WORST(bytes + 1) <= e->max_request_usd)
		bytes++;
#undef WORST
	return bytes;
}

/* DIR's own deployment on a pinned path; NULL under any/, where the
 * candidate that serves is known only at close(). */
static const struct model *pinned_model(struct node *dir)
{
	const struct model *model;
	const char *geo, *family;

	return node_route(dir, &model, &geo, &family) == 0 ? model : NULL;
}

static void fill_budgets(const struct effective_policy *e, struct ledger_budget *budgets);

/* The most text bytes a prompt in DIR under E may have before no
 * candidate's worst case fits the room its budgets have now. */
static size_t budget_room_bytes(struct node *dir, const struct effective_policy *e)
{
	struct ledger_budget *budgets;
	size_t best = 0;
	struct route route;
	char why[512];
	nusd_t room;

	if (!e->n_budgets)
		return SIZE_MAX;
	if (job_policy_route(dir, e, &route, why, sizeof(why)) < 0)
		return SIZE_MAX; /* refused otherwise, or nowhere to run */
	budgets = calloc(e->n_budgets, sizeof(*budgets));
	if (!budgets)
		return SIZE_MAX;
	fill_budgets(e, budgets);
	room = ledger_room(budgets, e->n_budgets, time(NULL));
	free(budgets);
	for (size_t i = 0; i < route.n; i++) {
		const struct model *model = route.models[i];
		const struct price *price = &model->price;
		struct llm_request req = { 0 };
		double fixed, guess;
		long base, out;
		size_t bytes;

		if (!price->known || empty_request(e, &req) < 0)
			continue;
		fixed = worst_case(&req, model);
		base = prompt_bytes_for_cost(&req);
		out = max_output_tokens(&req, model);
		llm_request_release(&req);
		if (isinf(fixed) || nusd_ceil(fixed) > room)
			continue;
		if (price->input_per_mtok <= 0)
			return SIZE_MAX;
		guess = ((double)room / NUSD_PER_USD - fixed) * 1e6 / price->input_per_mtok;
		if (guess >= 1e15)
			return SIZE_MAX;
		/* settled with the very sum the reservation at close() makes */
		bytes = (size_t)floor(guess + 0.5);
#define RESERVED(b)                                                                           \
	nusd_ceil(policy_worst_case_usd((size_t)base + (b), 0, 0, out, price->input_per_mtok, \
					price->output_per_mtok))
		while (bytes > 0 && RESERVED(bytes) > room)
			bytes--;
		while (RESERVED(bytes + 1) <= room)
			bytes++;
#undef RESERVED
		if (bytes > best)
			best = bytes;
	}
	return best;
}

size_t job_policy_budget_bytes(struct node *dir)
{
	struct effective_policy e;
	size_t bytes = SIZE_MAX;

	if (policy_store_effective(dir, &e) == 0)
		bytes = budget_room_bytes(dir, &e);
	effective_release(&e);
	return bytes;
}

void job_policy_prompt_caps(struct node *dir, struct prompt_caps *caps)
{
	struct effective_policy e;

	caps->size_bytes = pfs.opts->max_prompt_bytes;
	caps->cost_bytes = SIZE_MAX;
	caps->budget_bytes = SIZE_MAX;
	caps->may_be_json = caps->always_json = 0;
	if (policy_store_effective(dir, &e) == 0) {
		/* the mount option stays the ceiling: a policy only lowers it */
		if (e.max_prompt_bytes > 0 && (size_t)e.max_prompt_bytes < caps->size_bytes)
			caps->size_bytes = (size_t)e.max_prompt_bytes;
		caps->cost_bytes = cost_cap_bytes(&e, pinned_model(dir));
		caps->budget_bytes = budget_room_bytes(dir, &e);
		caps->may_be_json = e.prompt_format == POLICY_FORMAT_AUTO;
		caps->always_json = e.prompt_format == POLICY_FORMAT_JSON;
	}
	effective_release(&e);
}

/* The worst case of REQ on MODEL in USD: infinity when nothing bounds
 * its answer, NAN when the price is unknown. */
static double worst_case(const struct llm_request *req, const struct model *model)
{
	return route_worst_case(model, prompt_bytes_for_cost(req), req->max_tokens);
}

/* E's budgets for the ledger, into BUDGETS (E->n_budgets of them). */
static void fill_budgets(const struct effective_policy *e, struct ledger_budget *budgets)
{
	for (size_t i = 0; i < e->n_budgets; i++) {
		budgets[i].acct =
			e->budgets[i].level < e->n_dirs ? e->dirs[e->budgets[i].level] : 0;
		budgets[i].limit = nusd_round(e->budgets[i].usd);
		budgets[i].period = e->budgets[i].period;
		budgets[i].level = e->budgets[i].level;
	}
}

int job_keep_cost_inputs(struct job *job, const struct effective_policy *e,
			 const struct llm_request *req)
{
	job->cost_in_bytes = prompt_bytes_for_cost(req);
	job->cost_out_tokens = req->max_tokens;
	if (!e->n_budgets)
		return 0;
	job->budgets = calloc(e->n_budgets, sizeof(*job->budgets));
	if (!job->budgets)
		return -ENOMEM;
	fill_budgets(e, job->budgets);
	job->n_budgets = e->n_budgets;
	return 0;
}

int job_policy_follow_candidate(struct job *job, const struct model *model, char *why, size_t size)
{
	struct ledger_refusal refusal;
	char target[256], s[32], r[32], w[32], b[32];
	double worst;
	int rc;

	if (!job->hold.n)
		return 0;
	worst = route_worst_case(model, job->cost_in_bytes, job->cost_out_tokens);
	route_target_name(model, target, sizeof(target));
	if (job->n_budgets && (isnan(worst) || isinf(worst))) {
		snprintf(why, size, "%s skipped: its price is not known and a budget applies",
			 target);
		return -EDQUOT;
	}
	if (isnan(worst) || isinf(worst))
		return 0;
	rc = ledger_grow(&job->hold, nusd_ceil(worst), job->budgets, job->n_budgets, time(NULL),
			 &refusal);
	if (rc == -EDQUOT)
		snprintf(why, size,
			 "%s skipped: its worst case %s does not fit in budget_usd %s (spent %s + "
			 "reserved %s)",
			 target, nusd_format(nusd_ceil(worst), w, sizeof(w)),
			 nusd_format(job->budgets[refusal.which].limit, b, sizeof(b)),
			 nusd_format(refusal.spent, s, sizeof(s)),
			 nusd_format(refusal.reserved, r, sizeof(r)));
	return rc;
}

int job_policy_reserve(struct node *dir, const struct effective_policy *e,
		       const struct model *model, const struct llm_request *req,
		       struct ledger_hold *hold, char *why, size_t size)
{
	struct ledger_budget *budgets = NULL;
	struct ledger_refusal refusal;
	double worst = worst_case(req, model);
	char where[512], label[16], b[32], s[32], r[32], w[32];
	time_t now = time(NULL);
	int rc = 0;

	memset(hold, 0, sizeof(*hold));
	if (e->n_budgets && (isnan(worst) || isinf(worst))) {
		policy_store_level_file(dir, e->budgets[0].level, where, sizeof(where));
		if (isnan(worst))
			snprintf(why, size,
				 "refused by %s: budget_usd applies, and the price of %s/%s/%s is "
				 "not known",
				 where, model->region->cloud->name, model->region->name,
				 model->name);
		else
			snprintf(why, size,
				 "refused by %s: budget_usd applies, and nothing bounds the "
				 "answer's "
				 "tokens (set max_tokens or max_output_tokens)",
				 where);
		return -EDQUOT;
	}
	hold->amount = isnan(worst) || isinf(worst) ? 0 : nusd_ceil(worst);
	hold->accts = calloc(e->n_dirs ? e->n_dirs : 1, sizeof(*hold->accts));
	if (e->n_budgets)
		budgets = calloc(e->n_budgets, sizeof(*budgets));
	if (!hold->accts || (e->n_budgets && !budgets)) {
		rc = -ENOMEM;
		snprintf(why, size, "out of memory");
		goto out;
	}
	memcpy(hold->accts, e->dirs, e->n_dirs * sizeof(*hold->accts));
	hold->n = e->n_dirs;
	fill_budgets(e, budgets);
	rc = ledger_reserve(hold, budgets, e->n_budgets, now, &refusal);
	if (rc == -EDQUOT) {
		const struct ledger_budget *full = &budgets[refusal.which];

		policy_store_level_file(dir, full->level, where, sizeof(where));
		ledger_period_label(full->period, now, label, sizeof(label));
		snprintf(why, size,
			 "refused by %s: budget_usd %s %s %s, spent %s + reserved %s, this "
			 "request may cost up to %s",
			 where, nusd_format(full->limit, b, sizeof(b)),
			 full->period == POLICY_PERIOD_TOTAL ? "in" : "for", label,
			 nusd_format(refusal.spent, s, sizeof(s)),
			 nusd_format(refusal.reserved, r, sizeof(r)),
			 nusd_format(hold->amount, w, sizeof(w)));
	} else if (rc < 0) {
		snprintf(why, size, "out of memory");
	}
out:
	free(budgets);
	if (rc < 0)
		ledger_hold_free(hold);
	return rc;
}

void job_policy_charge(const json_t *final_meta, enum job_status status, struct ledger_charge *out)
{
	json_t *usage = json_object_get(final_meta, "usage");

	memset(out, 0, sizeof(*out));
	/* a cancelled job is no request done or failed: it costs what
	 * the provider reported, if anything */
	out->ok = status == JOB_DONE ? 1 : status == JOB_FAILED ? 0 : -1;
	out->when = time(NULL);
	out->cost = nusd_round(json_number_value(json_object_get(final_meta, "cost_usd")));
	out->input_tokens = (uint64_t)json_integer_value(json_object_get(usage, "input_tokens"));
	out->output_tokens = (uint64_t)json_integer_value(json_object_get(usage, "output_tokens"));
}

int job_policy_check_empty(struct node *dir, const struct effective_policy *e,
			   const struct model *model, char *why, size_t size)
{
	struct llm_request req = { 0 };
	struct ledger_hold hold;
	int rc;

	if (!e->has_max_request_usd && !e->n_budgets)
		return 0;
	rc = empty_request(e, &req);
	if (rc == 0)
		rc = check_cost(dir, e, &req, model, why, size);
	/* room in every budget now, without keeping it: close() reserves */
	if (rc == 0 && e->n_budgets) {
		rc = job_policy_reserve(dir, e, model, &req, &hold, why, size);
		if (rc == 0) {
			ledger_release(&hold);
			ledger_hold_free(&hold);
		}
	}
	llm_request_release(&req);
	return rc == -EDQUOT ? rc : 0;
}

/* Reserves REQ's worst case at the first candidate of ROUTE whose price
 * fits every budget; the ones before it leave the route (the first
 * refusal is the one told when none fits). */
int job_policy_reserve_route(struct node *dir, const struct effective_policy *e,
			     struct route *route, const struct llm_request *req,
			     struct ledger_hold *hold, char *why, size_t size)
{
	int rc = -EDQUOT;
	size_t i;

	for (i = 0; rc == -EDQUOT && i < route->n; i++) {
		char other[512];

		rc = job_policy_reserve(dir, e, route->models[i], req, hold, i ? other : why,
					i ? sizeof(other) : size);
	}
	if (rc == 0 && i > 1) {
		memmove(route->models, route->models + i - 1,
			(route->n - (i - 1)) * sizeof(*route->models));
		route->n -= i - 1;
	}
	return rc;
}
