/* `.usage` (see usage.h).
 *
 * What it says, where SPEC §6.4 leaves it open:
 *   - the figures (spent, reserved, requests, tokens) are those of this
 *     directory's subtree, in the period of the budget in force here;
 *   - the budget in force is this directory's own budget_usd when it has
 *     one, else the one of an ancestor with the least room left (the one
 *     a submission here would meet first); "budget_usd",
 *     "remaining_usd" and "budget_from" are that budget's, and null
 *     (no "budget_from") where no budget applies, with the period the
 *     calendar month;
 *   - "budgets" lists every budget that applies here, root first, each
 *     with the figures of its own subtree;
 *   - in a model's subtree, "price" gives the deployment's price and
 *     whether it came from the config or the catalog.
 * Money is written in fixed decimal (no exponent), so awk reads it. */
#include "fs/usage.h"

#include <inttypes.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs/ledger.h"
#include "fs/made_file.h"
#include "fs/policy_store.h"

/* A growing text. */
struct text {
	char *buf;
	size_t len, cap;
	int failed;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->failed = 1;
			return;
		}
		if ((size_t)n < t->cap - t->len) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = (t->cap + (size_t)n + 1) * 2;
		char *grown = realloc(t->buf, cap);

		if (!grown) {
			t->failed = 1;
			return;
		}
		t->buf = grown;
		t->cap = cap;
	}
}

/* S as a JSON string. */
static void put_string(struct text *t, const char *s)
{
	json_t *j = json_string(s);
	char *quoted = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;

	if (quoted)
		put(t, "%s", quoted);
	else
		t->failed = 1;
	free(quoted);
	json_decref(j);
}

static void put_money(struct text *t, nusd_t v)
{
	char buf[32];

	put(t, "%s", nusd_format(v, buf, sizeof(buf)));
}

/* One budget's figures, for the choice and the list. */
struct budget_view {
	size_t level;
	enum policy_budget_period period;
	nusd_t limit, spent, reserved, remaining;
};

static void put_counts(struct text *t, const struct ledger_counts *c, nusd_t reserved)
{
	put(t, "\"spent_usd\":");
	put_money(t, c->spent);
	put(t, ",\"reserved_usd\":");
	put_money(t, reserved);
}

static void put_budgets(struct text *t, struct node *dir, const struct budget_view *views, size_t n,
			time_t now)
{
	put(t, ",\"budgets\":[");
	for (size_t i = 0; i < n; i++) {
		char where[512], label[16];

		policy_store_level_file(dir, views[i].level, where, sizeof(where));
		ledger_period_label(views[i].period, now, label, sizeof(label));
		put(t, "%s{\"policy\":", i ? "," : "");
		put_string(t, where);
		put(t, ",\"period\":\"%s\",\"budget_usd\":", label);
		put_money(t, views[i].limit);
		put(t, ",\"spent_usd\":");
		put_money(t, views[i].spent);
		put(t, ",\"reserved_usd\":");
		put_money(t, views[i].reserved);
		put(t, ",\"remaining_usd\":");
		put_money(t, views[i].remaining);
		put(t, "}");
	}
	put(t, "]");
}

static void put_price(struct text *t, struct node *dir)
{
	const struct model *model;
	const char *geo, *family;

	if (node_route(dir, &model, &geo, &family) < 0 || !model)
		return; /* none, or a family of any/: no single price */
	if (!model->price.known) {
		put(t, ",\"price\":null");
		return;
	}
	put(t, ",\"price\":{\"input_per_mtok\":%.17g,\"output_per_mtok\":%.17g,\"source\":\"%s\"}",
	    model->price.input_per_mtok, model->price.output_per_mtok,
	    model->price.from_catalog ? "catalog" : "config");
}

char *usage_text(struct node *dir, size_t *len)
{
	struct effective_policy e;
	struct budget_view *views = NULL;
	struct ledger_counts here;
	struct text t = { 0 };
	enum policy_budget_period period = POLICY_PERIOD_MONTH;
	time_t now = time(NULL);
	nusd_t reserved;
	long chosen = -1;
	char label[16];

	if (policy_store_effective(dir, &e) < 0 || e.n_dirs == 0) {
		effective_release(&e);
		return NULL;
	}
	if (e.n_budgets && !(views = calloc(e.n_budgets, sizeof(*views)))) {
		effective_release(&e);
		return NULL;
	}
	for (size_t i = 0; i < e.n_budgets; i++) {
		struct budget_view *v = &views[i];
		struct ledger_counts c;

		v->level = e.budgets[i].level;
		v->period = e.budgets[i].period;
		v->limit = nusd_round(e.budgets[i].usd);
		ledger_usage(e.dirs[v->level], v->period, now, &c, &v->reserved);
		v->spent = c.spent;
		v->remaining = v->limit - v->spent - v->reserved;
		if (v->remaining < 0)
			v->remaining = 0;
		/* this directory's own, else the tightest */
		if (v->level == e.n_dirs - 1)
			chosen = (long)i;
		else if (chosen < 0 || (views[chosen].level != e.n_dirs - 1 &&
					v->remaining < views[chosen].remaining))
			chosen = (long)i;
	}
	if (chosen >= 0)
		period = views[chosen].period;
	ledger_usage(e.dirs[e.n_dirs - 1], period, now, &here, &reserved);
	ledger_period_label(period, now, label, sizeof(label));
	put(&t, "{\"period\":\"%s\",\"budget_usd\":", label);
	if (chosen >= 0)
		put_money(&t, views[chosen].limit);
	else
		put(&t, "null");
	put(&t, ",");
	put_counts(&t, &here, reserved);
	put(&t, ",\"remaining_usd\":");
	if (chosen >= 0)
		put_money(&t, views[chosen].remaining);
	else
		put(&t, "null");
	put(&t, ",\"requests\":{\"done\":%" PRIu64 ",\"failed\":%" PRIu64 "}", here.done,
	    here.failed);
	put(&t, ",\"tokens\":{\"input\":%" PRIu64 ",\"output\":%" PRIu64 "}", here.input_tokens,
	    here.output_tokens);
	if (chosen >= 0) {
		char where[512];

		policy_store_level_file(dir, views[chosen].level, where, sizeof(where));
		put(&t, ",\"budget_from\":");
		put_string(&t, where);
	}
	put_budgets(&t, dir, views, e.n_budgets, now);
	put_price(&t, dir);
	put(&t, "}\n");
	free(views);
	effective_release(&e);
	if (t.failed) {
		free(t.buf);
		return NULL;
	}
	*len = t.len;
	return t.buf;
}

void usage_stat(struct node *dir, struct stat *st)
{
	size_t len = 0;
	char *text = usage_text(dir, &len);

	free(text);
	made_file_stat(st, len);
}
