/* Which deployments may serve a prompt (see route.h). */
#include "fs/route.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "fs/promptfs.h"

/* The latency estimates: few deployments, so a short array. */
#define LATENCY_SLOTS 256
/* Weight of the newest attempt in the moving average. */
#define LATENCY_ALPHA 0.3

static pthread_mutex_t latency_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	const struct model *model;
	double ms;
} latency[LATENCY_SLOTS];

void route_note_latency(const struct model *model, long ttfb_ms)
{
	size_t i;

	if (ttfb_ms < 0)
		return;
	pthread_mutex_lock(&latency_lock);
	for (i = 0; i < LATENCY_SLOTS && latency[i].model && latency[i].model != model; i++)
		;
	if (i < LATENCY_SLOTS && latency[i].model == model)
		latency[i].ms =
			LATENCY_ALPHA * (double)ttfb_ms + (1 - LATENCY_ALPHA) * latency[i].ms;
	else if (i < LATENCY_SLOTS) {
		latency[i].model = model;
		latency[i].ms = (double)ttfb_ms;
	}
	pthread_mutex_unlock(&latency_lock);
}

/* MODEL's estimate, or NAN when no attempt measured it yet. */
static double latency_of(const struct model *model)
{
	double ms = NAN;

	pthread_mutex_lock(&latency_lock);
	for (size_t i = 0; i < LATENCY_SLOTS && latency[i].model; i++)
		if (latency[i].model == model)
			ms = latency[i].ms;
	pthread_mutex_unlock(&latency_lock);
	return ms;
}

void route_target_name(const struct model *model, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s/%s", model->region->cloud->name, model->region->name,
		 model->name);
}

long route_output_bound(const struct model *model, long out_tokens)
{
	if (model->max_output_tokens > 0 &&
	    (out_tokens == 0 || model->max_output_tokens < out_tokens))
		return model->max_output_tokens;
	return out_tokens;
}

double route_worst_case(const struct model *model, long in_bytes, long out_tokens)
{
	if (!model->price.known)
		return NAN;
	return policy_worst_case_usd((size_t)in_bytes, 0, 0, route_output_bound(model, out_tokens),
				     model->price.input_per_mtok, model->price.output_per_mtok);
}

/* Sorts KEYS ascending with MODELS alongside, stably, NAN last. */
static void sort_by(const struct model **models, double *keys, size_t from, size_t n)
{
	for (size_t i = from + 1; i < n; i++) {
		const struct model *m = models[i];
		double k = keys[i];
		size_t j = i;

		/* NAN compares false: an unknown key moves behind every known one */
		while (j > from &&
		       (isnan(keys[j - 1]) ? !isnan(k) : (!isnan(k) && k < keys[j - 1]))) {
			models[j] = models[j - 1];
			keys[j] = keys[j - 1];
			j--;
		}
		models[j] = m;
		keys[j] = k;
	}
}

static void add(struct route *out, const struct model *model)
{
	for (size_t i = 0; i < out->n; i++)
		if (out->models[i] == model)
			return;
	if (out->n < ENGINE_MAX_CANDIDATES)
		out->models[out->n++] = model;
}

/* Every deployment of FAMILY (in a region tagged GEO when not NULL) that
 * E allows, in config order. */
static void add_family(struct route *out, const struct effective_policy *e, const char *family,
		       const char *geo)
{
	const struct config *cfg = pfs.config;

	for (size_t c = 0; c < cfg->n_clouds; c++) {
		const struct cloud *cloud = &cfg->clouds[c];

		for (size_t r = 0; r < cloud->n_regions; r++) {
			const struct region *region = &cloud->regions[r];

			for (size_t m = 0; m < region->n_models; m++) {
				const struct model *model = &region->models[m];

				if (strcmp(model->family, family) == 0 &&
				    (!geo || model_has_geo(model, geo)) &&
				    effective_allows_model(e, model))
					add(out, model);
			}
		}
	}
}

int route_plan(struct node *dir, const struct effective_policy *e, long in_bytes, long out_tokens,
	       struct route *out, char *why, size_t size)
{
	const struct model *pinned;
	double keys[ENGINE_MAX_CANDIDATES];
	size_t first;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = node_route(dir, &pinned, &out->geo, &out->family);
	if (rc < 0)
		return rc;
	if (pinned) {
		if (!effective_allows_model(e, pinned)) {
			snprintf(why, size, "refused by the policies of this directory");
			return -EACCES;
		}
		add(out, pinned);
		if (e->fallback)
			add_family(out, e, pinned->family, NULL);
	} else {
		add_family(out, e, out->family, out->geo);
		if (out->n == 0) {
			snprintf(why, size,
				 "refused by the policies of this directory: providers and "
				 "residency "
				 "allow no deployment of %s in %s",
				 out->family, out->geo);
			return -EACCES;
		}
	}
	/* a pinned path's own deployment stays first */
	first = pinned ? 1 : 0;
	if (e->order == POLICY_ORDER_CONFIG || out->n - first < 2)
		return 0;
	for (size_t i = 0; i < out->n; i++)
		keys[i] = e->order == POLICY_ORDER_PRICE
				  ? route_worst_case(out->models[i], in_bytes, out_tokens)
				  : latency_of(out->models[i]);
	sort_by(out->models, keys, first, out->n);
	return 0;
}
