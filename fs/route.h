/* Which deployments may serve a prompt, in which order (SPEC §7): the
 * one call that admission, budgets and failover ask.
 *
 * A model directory's prompts go to its own deployment first; with the
 * effective `fallback`, then to the other deployments of the same family
 * that the effective providers and residency allow. A prompt in
 * any/<geo>/<family>/ goes to the deployments of that family in a region
 * tagged <geo> that the policies allow. The others follow the effective
 * `order`: config order, price (the request's worst case at each
 * deployment's price, unknown last) or latency (a moving average of
 * recent attempts' time to first byte, unknown last). A deployment
 * outside providers and residency is never a candidate. */
#ifndef PROMPTFS_ROUTE_H
#define PROMPTFS_ROUTE_H

#include <stddef.h>

#include "backends/engine.h"
#include "fs/node.h"
#include "fs/policy.h"

struct route {
	const struct model *models[ENGINE_MAX_CANDIDATES];
	size_t n;
	const char *geo, *family; /* any/: the directory's; NULL on a pinned path */
};

/* The candidates of a prompt in DIR under E (in force there), for a
 * request of IN_BYTES (prompt_bytes_for_cost) and OUT_TOKENS (its bound,
 * 0 unknown: used by the price order only). 0 with OUT->n >= 1; -ENOENT
 * when DIR is under no model and no family; -EACCES when the policies
 * allow none, with a sentence in WHY. */
int route_plan(struct node *dir, const struct effective_policy *e, long in_bytes, long out_tokens,
	       struct route *out, char *why, size_t size);

/* The bound on the answer's tokens a request asking OUT_TOKENS (0: none)
 * gets on MODEL: the deployment's own cap where it is lower; 0 when
 * nothing bounds it. */
long route_output_bound(const struct model *model, long out_tokens);

/* The worst case in USD (SPEC 6.4) of a request of IN_BYTES
 * (prompt_bytes_for_cost) asking OUT_TOKENS on MODEL: infinity when
 * nothing bounds its answer, NAN when the price is unknown. */
double route_worst_case(const struct model *model, long in_bytes, long out_tokens);

/* "cloud/region/model". */
void route_target_name(const struct model *model, char *buf, size_t size);

/* An attempt on MODEL got its first byte after TTFB_MS: the latency
 * order's estimate moves. Any thread. */
void route_note_latency(const struct model *model, long ttfb_ms);

#endif
