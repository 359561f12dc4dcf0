/* The budget ledger (see ledger.h). */
#include "fs/ledger.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEDGER_BUCKETS 1024

struct account {
	uint64_t ino;
	long day_key, month_key; /* the periods DAY and MONTH count */
	struct ledger_counts day, month, total;
	nusd_t reserved;
	uint64_t holds;	    /* reservations counted in RESERVED */
	uint64_t forgotten; /* the number of the forget that last cleared it, or 0 */
	struct account *next;
};

static pthread_mutex_t ledger_lock = PTHREAD_MUTEX_INITIALIZER;
static struct account *table[LEDGER_BUCKETS];
/* Accounts forgotten so far: the epoch of a hold made now. Never reset,
 * so a hold is never taken for one made after a forget it predates. */
static uint64_t forgets;

nusd_t nusd_ceil(double usd)
{
	double v = ceil(usd * (double)NUSD_PER_USD - 1e-6);

	if (!(v < 9e18)) /* also NaN and infinity */
		return INT64_MAX / 4;
	return v < 0 ? 0 : (nusd_t)v;
}

nusd_t nusd_round(double usd)
{
	double v = round(usd * (double)NUSD_PER_USD);

	if (!(v < 9e18))
		return INT64_MAX / 4;
	return v < 0 ? 0 : (nusd_t)v;
}

const char *nusd_format(nusd_t v, char *buf, size_t size)
{
	int neg = v < 0;
	uint64_t a = neg ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
	uint64_t whole = a / NUSD_PER_USD, frac = a % NUSD_PER_USD;
	int len = snprintf(buf, size, "%s%" PRIu64 ".%09" PRIu64, neg ? "-" : "", whole, frac);

	/* no trailing zeros, no lone point */
	while (len > 0 && (size_t)len < size && buf[len - 1] == '0')
		buf[--len] = '\0';
	if (len > 0 && (size_t)len < size && buf[len - 1] == '.')
		buf[--len] = '\0';
	return buf;
}

long ledger_period_key(enum policy_budget_period period, time_t now)
{
	struct tm tm;

	if (period == POLICY_PERIOD_TOTAL || !gmtime_r(&now, &tm))
		return 0;
	if (period == POLICY_PERIOD_DAY)
		return (tm.tm_year + 1900L) * 10000 + (tm.tm_mon + 1) * 100 + tm.tm_mday;
	return (tm.tm_year + 1900L) * 100 + tm.tm_mon + 1;
}

void ledger_period_label(enum policy_budget_period period, time_t now, char *buf, size_t size)
{
	long key = ledger_period_key(period, now);

	if (period == POLICY_PERIOD_TOTAL)
		snprintf(buf, size, "total");
	else if (period == POLICY_PERIOD_DAY)
		snprintf(buf, size, "%04ld-%02ld-%02ld", key / 10000, key / 100 % 100, key % 100);
	else
		snprintf(buf, size, "%04ld-%02ld", key / 100, key % 100);
}

void ledger_init(void)
{
}

void ledger_destroy(void)
{
	pthread_mutex_lock(&ledger_lock);
	for (size_t b = 0; b < LEDGER_BUCKETS; b++) {
		while (table[b]) {
			struct account *a = table[b];

			table[b] = a->next;
			free(a);
		}
	}
	pthread_mutex_unlock(&ledger_lock);
}

static size_t bucket_of(uint64_t ino)
{
	return (size_t)((ino * 0x9e3779b97f4a7c15ull) >> 40) % LEDGER_BUCKETS;
}

static struct account *find_locked(uint64_t ino)
{
	struct account *a = table[bucket_of(ino)];

	while (a && a->ino != ino)
		a = a->next;
	return a;
}

static int counts_empty(const struct ledger_counts *c)
{
	return !c->spent && !c->done && !c->failed && !c->input_tokens && !c->output_tokens;
}

static int spent_nothing(const struct account *a)
{
	return counts_empty(&a->total) && counts_empty(&a->month) && counts_empty(&a->day);
}

/* Whether A was forgotten after H was held: then A is another
 * directory's now, or nobody's, and H neither charges it nor says it
 * reserved there (H still gives back the room it holds there). */
static int forgotten_since(const struct account *a, const struct ledger_hold *h)
{
	return a->forgotten > h->epoch;
}

/* A forgotten account that holds nothing and has spent nothing since
 * goes: a snapshot then leaves it out, and a directory given its number
 * finds none. */
static void drop_if_empty_locked(struct account *a)
{
	struct account **pp = &table[bucket_of(a->ino)];

	if (!a->forgotten || a->holds || !spent_nothing(a))
		return;
	while (*pp && *pp != a)
		pp = &(*pp)->next;
	if (*pp)
		*pp = a->next;
	free(a);
}

static struct account *get_locked(uint64_t ino)
{
	struct account *a = find_locked(ino);
	size_t b;

	if (a)
		return a;
	a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->ino = ino;
	b = bucket_of(ino);
	a->next = table[b];
	table[b] = a;
	return a;
}

/* What A spent in PERIOD at NOW: a period it has not counted yet is
 * empty. */
static struct ledger_counts counts_at(const struct account *a, enum policy_budget_period period,
				      time_t now)
{
	struct ledger_counts none = { 0 };

	if (period == POLICY_PERIOD_TOTAL)
		return a->total;
	if (period == POLICY_PERIOD_DAY)
		return a->day_key == ledger_period_key(period, now) ? a->day : none;
	return a->month_key == ledger_period_key(period, now) ? a->month : none;
}

static void counts_add(struct ledger_counts *to, const struct ledger_charge *c)
{
	to->spent += c->cost;
	to->done += c->ok > 0 ? 1 : 0;
	to->failed += c->ok == 0 ? 1 : 0;
	to->input_tokens += c->input_tokens;
	to->output_tokens += c->output_tokens;
}

/* Adds C to A's day, month and total. A charge dated in a later period
 * starts it; one dated earlier than the period counted (a clock set
 * back) is counted in it rather than lost. */
static void charge_locked(struct account *a, const struct ledger_charge *c)
{
	long day = ledger_period_key(POLICY_PERIOD_DAY, c->when);
	long month = ledger_period_key(POLICY_PERIOD_MONTH, c->when);

	if (day > a->day_key) {
		memset(&a->day, 0, sizeof(a->day));
		a->day_key = day;
	}
	if (month > a->month_key) {
		memset(&a->month, 0, sizeof(a->month));
		a->month_key = month;
	}
	counts_add(&a->day, c);
	counts_add(&a->month, c);
	counts_add(&a->total, c);
}

static void hold_locked(struct ledger_hold *h, struct account **accounts)
{
	for (size_t i = 0; i < h->n; i++) {
		accounts[i]->reserved += h->amount;
		accounts[i]->holds++;
	}
	h->held = 1;
	h->epoch = forgets;
}

static void release_locked(struct ledger_hold *h)
{
	if (!h->held)
		return;
	for (size_t i = 0; i < h->n; i++) {
		struct account *a = find_locked(h->accts[i]);

		if (!a || !a->holds)
			continue;
		a->reserved -= h->amount;
		/* the last reservation gone leaves exactly nothing */
		if (--a->holds == 0 || a->reserved < 0)
			a->reserved = 0;
		drop_if_empty_locked(a);
	}
	h->held = 0;
}

/* H's accounts, made where missing, into OUT (H->n entries). */
static int accounts_locked(const struct ledger_hold *h, struct account **out)
{
	for (size_t i = 0; i < h->n; i++) {
		out[i] = get_locked(h->accts[i]);
		if (!out[i])
			return -ENOMEM;
	}
	return 0;
}

int ledger_reserve(struct ledger_hold *h, const struct ledger_budget *budgets, size_t n, time_t now,
		   struct ledger_refusal *why)
{
	struct account **accounts = calloc(h->n ? h->n : 1, sizeof(*accounts));
	int rc;

	if (!accounts)
		return -ENOMEM;
	pthread_mutex_lock(&ledger_lock);
	rc = accounts_locked(h, accounts);
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct account *a = get_locked(budgets[i].acct);
		struct ledger_counts spent;

		if (!a) {
			rc = -ENOMEM;
			break;
		}
		spent = counts_at(a, budgets[i].period, now);
		if (spent.spent + a->reserved + h->amount > budgets[i].limit) {
			why->which = i;
			why->spent = spent.spent;
			why->reserved = a->reserved;
			rc = -EDQUOT;
		}
	}
	if (rc == 0)
		hold_locked(h, accounts);
	pthread_mutex_unlock(&ledger_lock);
	free(accounts);
	return rc;
}

int ledger_grow(struct ledger_hold *h, nusd_t amount, const struct ledger_budget *budgets, size_t n,
		time_t now, struct ledger_refusal *why)
{
	nusd_t more = amount - h->amount;
	int rc = 0;

	pthread_mutex_lock(&ledger_lock);
	if (!h->held || more <= 0) {
		pthread_mutex_unlock(&ledger_lock);
		return 0;
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct account *a = find_locked(budgets[i].acct);
		struct ledger_counts spent = { 0 };
		nusd_t reserved = a ? a->reserved : 0;

		if (a)
			spent = counts_at(a, budgets[i].period, now);
		if (spent.spent + reserved + more > budgets[i].limit) {
			why->which = i;
			why->spent = spent.spent;
			why->reserved = reserved;
			rc = -EDQUOT;
		}
	}
	for (size_t i = 0; rc == 0 && i < h->n; i++) {
		struct account *a = find_locked(h->accts[i]);

		if (a)
			a->reserved += more;
	}
	if (rc == 0)
		h->amount = amount;
	pthread_mutex_unlock(&ledger_lock);
	return rc;
}

nusd_t ledger_room(const struct ledger_budget *budgets, size_t n, time_t now)
{
	nusd_t least = INT64_MAX;

	pthread_mutex_lock(&ledger_lock);
	for (size_t i = 0; i < n; i++) {
		struct account *a = find_locked(budgets[i].acct);
		struct ledger_counts spent = { 0 };
		nusd_t room;

		if (a)
			spent = counts_at(a, budgets[i].period, now);
		room = budgets[i].limit - spent.spent - (a ? a->reserved : 0);
		if (room < least)
			least = room;
	}
	pthread_mutex_unlock(&ledger_lock);
	return least;
}

int ledger_hold_again(struct ledger_hold *h)
{
	struct account **accounts = calloc(h->n ? h->n : 1, sizeof(*accounts));
	int rc;

	if (!accounts)
		return -ENOMEM;
	pthread_mutex_lock(&ledger_lock);
	rc = h->held ? 0 : accounts_locked(h, accounts);
	if (rc == 0 && !h->held)
		hold_locked(h, accounts);
	pthread_mutex_unlock(&ledger_lock);
	free(accounts);
	return rc;
}

void ledger_release(struct ledger_hold *h)
{
	pthread_mutex_lock(&ledger_lock);
	release_locked(h);
	pthread_mutex_unlock(&ledger_lock);
}

void ledger_apply(const uint64_t *accts, size_t n, const struct ledger_charge *c)
{
	pthread_mutex_lock(&ledger_lock);
	for (size_t i = 0; i < n; i++) {
		struct account *a = get_locked(accts[i]);

		if (a)
			charge_locked(a, c);
	}
	pthread_mutex_unlock(&ledger_lock);
}

void ledger_charge(struct ledger_hold *h, const struct ledger_charge *c)
{
	pthread_mutex_lock(&ledger_lock);
	/* charged before the release, which may drop an account forgotten
	 * since H was held (and not charged here) */
	for (size_t i = 0; i < h->n; i++) {
		struct account *a = find_locked(h->accts[i]);

		if (a && forgotten_since(a, h))
			continue;
		a = a ? a : get_locked(h->accts[i]);
		if (a)
			charge_locked(a, c);
	}
	release_locked(h);
	pthread_mutex_unlock(&ledger_lock);
}

int ledger_forget(uint64_t acct)
{
	struct account *a;

	pthread_mutex_lock(&ledger_lock);
	a = find_locked(acct);
	if (a) {
		/* the subtree's spending is its ancestors' still; here it
		 * goes. A reservation held stays counted (its release takes
		 * it back, and a new directory of this number must not have
		 * more room than the budgets have), but the holds made so far
		 * charge it no more */
		memset(&a->day, 0, sizeof(a->day));
		memset(&a->month, 0, sizeof(a->month));
		memset(&a->total, 0, sizeof(a->total));
		a->day_key = a->month_key = 0;
		a->forgotten = ++forgets;
		drop_if_empty_locked(a);
	}
	pthread_mutex_unlock(&ledger_lock);
	return a != NULL;
}

int ledger_knows(uint64_t acct)
{
	struct account *a;
	int known;

	pthread_mutex_lock(&ledger_lock);
	a = find_locked(acct);
	known = a && (a->holds || !spent_nothing(a));
	pthread_mutex_unlock(&ledger_lock);
	return known;
}

void ledger_hold_free(struct ledger_hold *h)
{
	free(h->accts);
	h->accts = NULL;
	h->n = 0;
}

void ledger_usage(uint64_t acct, enum policy_budget_period period, time_t now,
		  struct ledger_counts *out, nusd_t *reserved)
{
	struct account *a;

	memset(out, 0, sizeof(*out));
	*reserved = 0;
	pthread_mutex_lock(&ledger_lock);
	a = find_locked(acct);
	if (a) {
		*out = counts_at(a, period, now);
		*reserved = a->reserved;
	}
	pthread_mutex_unlock(&ledger_lock);
}

/* ---- records ---- */

json_t *ledger_hold_accts_json(const struct ledger_hold *h)
{
	json_t *list = json_array();

	pthread_mutex_lock(&ledger_lock);
	for (size_t i = 0; list && i < h->n; i++) {
		struct account *a = find_locked(h->accts[i]);

		/* as ledger_charge: a replay must count what it counted */
		if (a && forgotten_since(a, h))
			continue;
		if (json_array_append_new(list, json_integer((json_int_t)h->accts[i])) < 0) {
			json_decref(list);
			list = NULL;
		}
	}
	pthread_mutex_unlock(&ledger_lock);
	return list;
}

json_t *ledger_charge_to_json(const struct ledger_hold *h, const struct ledger_charge *c)
{
	return json_pack("{s:o, s:I, s:i, s:I, s:I, s:I}", "acct", ledger_hold_accts_json(h),
			 "nusd", (json_int_t)c->cost, "ok", c->ok, "in",
			 (json_int_t)c->input_tokens, "out", (json_int_t)c->output_tokens, "at",
			 (json_int_t)c->when);
}

int ledger_charge_from_json(const json_t *j, uint64_t **accts, size_t *n, struct ledger_charge *c)
{
	json_t *list = json_object_get(j, "acct"), *v;
	size_t i;

	*accts = NULL;
	*n = 0;
	if (!json_is_array(list) || !json_is_integer(json_object_get(j, "nusd")))
		return -EINVAL;
	c->cost = (nusd_t)json_integer_value(json_object_get(j, "nusd"));
	c->ok = (int)json_integer_value(json_object_get(j, "ok"));
	c->input_tokens = (uint64_t)json_integer_value(json_object_get(j, "in"));
	c->output_tokens = (uint64_t)json_integer_value(json_object_get(j, "out"));
	c->when = (time_t)json_integer_value(json_object_get(j, "at"));
	if (json_array_size(list) == 0)
		return 0;
	*accts = calloc(json_array_size(list), sizeof(**accts));
	if (!*accts)
		return -ENOMEM;
	json_array_foreach (list, i, v)
		(*accts)[i] = (uint64_t)json_integer_value(v);
	*n = json_array_size(list);
	return 0;
}

static json_t *counts_to_json(const struct ledger_counts *c)
{
	return json_pack("[I, I, I, I, I]", (json_int_t)c->spent, (json_int_t)c->done,
			 (json_int_t)c->failed, (json_int_t)c->input_tokens,
			 (json_int_t)c->output_tokens);
}

static int counts_from_json(const json_t *j, struct ledger_counts *c)
{
	if (!json_is_array(j) || json_array_size(j) != 5)
		return -EINVAL;
	c->spent = (nusd_t)json_integer_value(json_array_get(j, 0));
	c->done = (uint64_t)json_integer_value(json_array_get(j, 1));
	c->failed = (uint64_t)json_integer_value(json_array_get(j, 2));
	c->input_tokens = (uint64_t)json_integer_value(json_array_get(j, 3));
	c->output_tokens = (uint64_t)json_integer_value(json_array_get(j, 4));
	return 0;
}

json_t *ledger_snapshot(void)
{
	json_t *accounts = json_array(), *rec;

	pthread_mutex_lock(&ledger_lock);
	for (size_t b = 0; accounts && b < LEDGER_BUCKETS; b++) {
		for (struct account *a = table[b]; a; a = a->next) {
			json_t *one;

			/* nothing to say: restore counts it as zero anyway,
			 * and a forgotten account must not come back */
			if (spent_nothing(a))
				continue;
			one = json_pack("{s:I, s:I, s:o, s:I, s:o, s:o}", "ino", (json_int_t)a->ino,
					"day", (json_int_t)a->day_key, "d", counts_to_json(&a->day),
					"month", (json_int_t)a->month_key, "m",
					counts_to_json(&a->month), "all",
					counts_to_json(&a->total));

			if (!one || json_array_append_new(accounts, one) < 0) {
				json_decref(accounts);
				accounts = NULL;
				break;
			}
		}
	}
	pthread_mutex_unlock(&ledger_lock);
	rec = accounts ? json_pack("{s:s, s:o}", "t", "ledger", "accounts", accounts) : NULL;
	return rec;
}

int ledger_restore(const json_t *record)
{
	json_t *accounts = json_object_get(record, "accounts"), *one;
	int rc = json_is_array(accounts) ? 0 : -EINVAL;
	size_t i;

	if (rc < 0)
		return rc;
	pthread_mutex_lock(&ledger_lock);
	/* spending only: reservations stay, they are the live jobs' */
	for (size_t b = 0; b < LEDGER_BUCKETS; b++) {
		for (struct account *a = table[b]; a; a = a->next) {
			memset(&a->day, 0, sizeof(a->day));
			memset(&a->month, 0, sizeof(a->month));
			memset(&a->total, 0, sizeof(a->total));
			a->day_key = a->month_key = 0;
		}
	}
	json_array_foreach (accounts, i, one) {
		struct account *a =
			get_locked((uint64_t)json_integer_value(json_object_get(one, "ino")));

		if (!a) {
			rc = -ENOMEM;
			break;
		}
		a->day_key = (long)json_integer_value(json_object_get(one, "day"));
		a->month_key = (long)json_integer_value(json_object_get(one, "month"));
		if (counts_from_json(json_object_get(one, "d"), &a->day) < 0 ||
		    counts_from_json(json_object_get(one, "m"), &a->month) < 0 ||
		    counts_from_json(json_object_get(one, "all"), &a->total) < 0)
			rc = -EINVAL;
	}
	pthread_mutex_unlock(&ledger_lock);
	return rc;
}

json_t *ledger_forget_record(uint64_t acct)
{
	return json_pack("{s:s, s:I}", "t", "forget", "acct", (json_int_t)acct);
}

int ledger_forget_replay(const json_t *record)
{
	json_t *acct = json_object_get(record, "acct");

	if (!json_is_integer(acct))
		return -EINVAL;
	ledger_forget((uint64_t)json_integer_value(acct));
	return 0;
}
