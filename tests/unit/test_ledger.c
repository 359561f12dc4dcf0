/* Unit tests for fs/ledger.c: reservations against budgets, charges and
 * releases, the UTC periods with a clock the test moves, and the
 * snapshot a checkpoint writes. Each case starts from an empty ledger. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fs/ledger.h"

/* 2026-11-30T23:59:59Z and the seconds after it: a new day and month. */
#define NOV_30_LAST 1796083199
#define DEC_1_FIRST (NOV_30_LAST + 1)

static uint64_t path3[] = { 1, 20, 300 }; /* root, team, workspace */

static struct ledger_hold hold_of(nusd_t amount)
{
	struct ledger_hold h = { .n = 3, .amount = amount };

	h.accts = malloc(sizeof(path3));
	memcpy(h.accts, path3, sizeof(path3));
	return h;
}

static int reset(void **state)
{
	(void)state;
	ledger_destroy();
	return 0;
}

static void test_money_format(void **state)
{
	char buf[32];

	(void)state;
	assert_string_equal(nusd_format(486000, buf, sizeof(buf)), "0.000486");
	assert_string_equal(nusd_format(3600, buf, sizeof(buf)), "0.0000036");
	assert_string_equal(nusd_format(50 * NUSD_PER_USD, buf, sizeof(buf)), "50");
	assert_string_equal(nusd_format(12500000000, buf, sizeof(buf)), "12.5");
	assert_string_equal(nusd_format(0, buf, sizeof(buf)), "0");
	assert_string_equal(nusd_format(-150000000, buf, sizeof(buf)), "-0.15");
	assert_int_equal(nusd_ceil(0.0000036), 3600);
	assert_int_equal(nusd_ceil(0.1 + 0.2), 300000000); /* float noise is no nano-dollar */
	assert_int_equal(nusd_ceil(1e-10), 1);
	assert_int_equal(nusd_round(0.0000036), 3600);
	assert_int_equal(nusd_ceil(-1), 0);
}

static void test_periods(void **state)
{
	char label[16];

	(void)state;
	assert_int_equal(ledger_period_key(POLICY_PERIOD_DAY, NOV_30_LAST), 20261130);
	assert_int_equal(ledger_period_key(POLICY_PERIOD_MONTH, NOV_30_LAST), 202611);
	assert_int_equal(ledger_period_key(POLICY_PERIOD_DAY, DEC_1_FIRST), 20261201);
	assert_int_equal(ledger_period_key(POLICY_PERIOD_TOTAL, DEC_1_FIRST), 0);
	ledger_period_label(POLICY_PERIOD_DAY, NOV_30_LAST, label, sizeof(label));
	assert_string_equal(label, "2026-11-30");
	ledger_period_label(POLICY_PERIOD_MONTH, DEC_1_FIRST, label, sizeof(label));
	assert_string_equal(label, "2026-12");
	ledger_period_label(POLICY_PERIOD_TOTAL, DEC_1_FIRST, label, sizeof(label));
	assert_string_equal(label, "total");
}

/* A budget fits exactly N worst cases: the N+1st is refused, with the
 * budget's figures, and nothing of it is held. */
static void test_reserve_exact_fit(void **state)
{
	struct ledger_budget team = { .acct = 20,
				      .limit = 20 * 123457,
				      .period = POLICY_PERIOD_MONTH };
	struct ledger_hold holds[21];
	struct ledger_refusal why = { 0 };
	struct ledger_counts c;
	nusd_t reserved;

	(void)state;
	for (int i = 0; i < 20; i++) {
		holds[i] = hold_of(123457);
		assert_int_equal(ledger_reserve(&holds[i], &team, 1, NOV_30_LAST, &why), 0);
		assert_true(holds[i].held);
	}
	holds[20] = hold_of(123457);
	assert_int_equal(ledger_reserve(&holds[20], &team, 1, NOV_30_LAST, &why), -EDQUOT);
	assert_false(holds[20].held);
	assert_int_equal(why.which, 0);
	assert_int_equal(why.spent, 0);
	assert_int_equal(why.reserved, 20 * 123457);
	/* every level of the path holds the reservations, for .usage */
	ledger_usage(300, POLICY_PERIOD_MONTH, NOV_30_LAST, &c, &reserved);
	assert_int_equal(reserved, 20 * 123457);
	ledger_usage(1, POLICY_PERIOD_MONTH, NOV_30_LAST, &c, &reserved);
	assert_int_equal(reserved, 20 * 123457);
	for (int i = 0; i < 21; i++) {
		ledger_release(&holds[i]);
		ledger_release(&holds[i]); /* twice is once */
		ledger_hold_free(&holds[i]);
	}
	ledger_usage(20, POLICY_PERIOD_MONTH, NOV_30_LAST, &c, &reserved);
	assert_int_equal(reserved, 0);
}

/* The charge replaces the reservation: room comes back for the rest. */
static void test_charge_releases_rest(void **state)
{
	struct ledger_budget team = { .acct = 20, .limit = 1000, .period = POLICY_PERIOD_MONTH };
	struct ledger_charge done = {
		.cost = 300, .ok = 1, .input_tokens = 12, .output_tokens = 30, .when = NOV_30_LAST
	};
	struct ledger_hold a = hold_of(800), b = hold_of(800);
	struct ledger_refusal why;
	struct ledger_counts c;
	nusd_t reserved;

	(void)state;
	assert_int_equal(ledger_reserve(&a, &team, 1, NOV_30_LAST, &why), 0);
	assert_int_equal(ledger_reserve(&b, &team, 1, NOV_30_LAST, &why), -EDQUOT);
	assert_int_equal(why.reserved, 800);
	ledger_charge(&a, &done);
	assert_false(a.held);
	ledger_usage(20, POLICY_PERIOD_MONTH, NOV_30_LAST, &c, &reserved);
	assert_int_equal(c.spent, 300);
	assert_int_equal(c.done, 1);
	assert_int_equal(c.failed, 0);
	assert_int_equal(c.input_tokens, 12);
	assert_int_equal(c.output_tokens, 30);
	assert_int_equal(reserved, 0);
	/* 300 spent + 800 > 1000 */
	assert_int_equal(ledger_reserve(&b, &team, 1, NOV_30_LAST, &why), -EDQUOT);
	assert_int_equal(why.spent, 300);
	b.amount = 700;
	assert_int_equal(ledger_reserve(&b, &team, 1, NOV_30_LAST, &why), 0);
	ledger_release(&b);
	ledger_hold_free(&a);
	ledger_hold_free(&b);
}

/* Every budget on the path must have room; the first without is named. */
static void test_every_budget_applies(void **state)
{
	struct ledger_budget budgets[] = {
		{ .acct = 1, .limit = 10000, .period = POLICY_PERIOD_TOTAL, .level = 0 },
		{ .acct = 300, .limit = 500, .period = POLICY_PERIOD_DAY, .level = 2 },
	};
	struct ledger_charge spent = { .cost = 400, .ok = 1, .when = NOV_30_LAST };
	struct ledger_hold h = hold_of(200);
	struct ledger_refusal why;

	(void)state;
	ledger_apply(path3, 3, &spent);
	assert_int_equal(ledger_reserve(&h, budgets, 2, NOV_30_LAST, &why), -EDQUOT);
	assert_int_equal(why.which, 1);
	assert_int_equal(why.spent, 400);
	ledger_hold_free(&h);
}

/* Period rollover: a new day starts at zero for a day budget while the
 * month and the total keep counting; a new month likewise. */
static void test_rollover(void **state)
{
	struct ledger_budget day = { .acct = 20, .limit = 500, .period = POLICY_PERIOD_DAY };
	struct ledger_budget month = { .acct = 20, .limit = 500, .period = POLICY_PERIOD_MONTH };
	struct ledger_budget total = { .acct = 20, .limit = 500, .period = POLICY_PERIOD_TOTAL };
	struct ledger_charge spent = { .cost = 450, .ok = 0, .when = NOV_30_LAST - 3600 };
	struct ledger_hold h = hold_of(100);
	struct ledger_refusal why;
	struct ledger_counts c;
	nusd_t reserved;

	(void)state;
	ledger_apply(path3, 3, &spent);
	assert_int_equal(ledger_reserve(&h, &day, 1, NOV_30_LAST, &why), -EDQUOT);
	assert_int_equal(ledger_reserve(&h, &day, 1, DEC_1_FIRST, &why), 0);
	ledger_release(&h);
	assert_int_equal(ledger_reserve(&h, &month, 1, DEC_1_FIRST, &why), 0);
	ledger_release(&h);
	assert_int_equal(ledger_reserve(&h, &total, 1, DEC_1_FIRST, &why), -EDQUOT);
	ledger_usage(20, POLICY_PERIOD_DAY, DEC_1_FIRST, &c, &reserved);
	assert_int_equal(c.spent, 0);
	assert_int_equal(c.failed, 0);
	ledger_usage(20, POLICY_PERIOD_MONTH, NOV_30_LAST, &c, &reserved);
	assert_int_equal(c.spent, 450);
	assert_int_equal(c.failed, 1);
	/* a charge in the new day starts it; the old month is gone */
	spent.when = DEC_1_FIRST + 10;
	spent.cost = 7;
	ledger_apply(path3, 3, &spent);
	ledger_usage(20, POLICY_PERIOD_MONTH, DEC_1_FIRST + 20, &c, &reserved);
	assert_int_equal(c.spent, 7);
	ledger_usage(20, POLICY_PERIOD_TOTAL, DEC_1_FIRST + 20, &c, &reserved);
	assert_int_equal(c.spent, 457);
	ledger_hold_free(&h);
}

/* A snapshot gives back the spending, not the reservations, and a
 * restore replaces what was counted. */
static void test_snapshot_restore(void **state)
{
	struct ledger_charge spent = {
		.cost = 1234, .ok = 1, .input_tokens = 5, .output_tokens = 6, .when = NOV_30_LAST
	};
	struct ledger_hold h = hold_of(99);
	struct ledger_budget none = { .acct = 1, .limit = INT64_MAX / 4 };
	struct ledger_refusal why;
	struct ledger_counts c;
	nusd_t reserved;
	json_t *snap, *text_back;
	char *text;

	(void)state;
	ledger_apply(path3, 3, &spent);
	assert_int_equal(ledger_reserve(&h, &none, 1, NOV_30_LAST, &why), 0);
	snap = ledger_snapshot();
	assert_non_null(snap);
	text = json_dumps(snap, JSON_COMPACT);
	text_back = json_loads(text, 0, NULL);
	ledger_apply(path3, 3, &spent); /* after the snapshot: undone by restore */
	assert_int_equal(ledger_restore(text_back), 0);
	ledger_usage(300, POLICY_PERIOD_DAY, NOV_30_LAST, &c, &reserved);
	assert_int_equal(c.spent, 1234);
	assert_int_equal(c.done, 1);
	assert_int_equal(c.output_tokens, 6);
	assert_int_equal(reserved, 99); /* the live job's, kept */
	ledger_release(&h);
	json_decref(text_back);
	text_back = json_object();
	assert_int_equal(ledger_restore(text_back), -EINVAL);
	free(text);
	json_decref(text_back);
	json_decref(snap);
	ledger_hold_free(&h);
}

static void test_charge_json(void **state)
{
	struct ledger_charge c = { .cost = 486000,
				   .ok = 1,
				   .input_tokens = 12,
				   .output_tokens = 30,
				   .when = NOV_30_LAST };
	struct ledger_hold h = hold_of(0);
	struct ledger_charge back;
	uint64_t *accts;
	size_t n;
	json_t *j = ledger_charge_to_json(&h, &c);

	(void)state;
	assert_non_null(j);
	assert_int_equal(ledger_charge_from_json(j, &accts, &n, &back), 0);
	assert_int_equal(n, 3);
	assert_int_equal(accts[2], 300);
	assert_int_equal(back.cost, 486000);
	assert_int_equal(back.ok, 1);
	assert_int_equal(back.output_tokens, 30);
	assert_int_equal(back.when, NOV_30_LAST);
	free(accts);
	json_decref(j);
	j = json_pack("{s:s}", "acct", "x");
	assert_int_equal(ledger_charge_from_json(j, &accts, &n, &back), -EINVAL);
	json_decref(j);
	ledger_hold_free(&h);
}

/* A removed directory's account with nothing held goes: its figures are
 * gone (a new directory of its number starts at zero, with a budget's
 * whole room), its ancestors keep what was spent in it, and a snapshot
 * no longer names it. */
static void test_forget_drops_the_figures(void **state)
{
	struct ledger_charge spent = {
		.cost = 400, .ok = 1, .input_tokens = 7, .output_tokens = 9, .when = NOV_30_LAST
	};
	struct ledger_budget fresh = { .acct = 300, .limit = 500, .period = POLICY_PERIOD_MONTH };
	struct ledger_hold h = hold_of(500);
	struct ledger_refusal why;
	struct ledger_counts c;
	nusd_t reserved;
	json_t *snap;
	size_t i;
	json_t *one;

	(void)state;
	ledger_apply(path3, 3, &spent);
	assert_true(ledger_knows(300));
	assert_int_equal(ledger_forget(300), 1);
	assert_false(ledger_knows(300));
	assert_int_equal(ledger_forget(300), 0); /* nothing left to record */
	ledger_usage(300, POLICY_PERIOD_TOTAL, NOV_30_LAST, &c, &reserved);
	assert_int_equal(c.spent, 0);
	assert_int_equal(c.done, 0);
	assert_int_equal(c.input_tokens, 0);
	assert_int_equal(reserved, 0);
	for (uint64_t acct = 1; acct <= 20; acct += 19) {
		ledger_usage(acct, POLICY_PERIOD_MONTH, NOV_30_LAST, &c, &reserved);
		assert_int_equal(c.spent, 400);
		assert_int_equal(c.done, 1);
		assert_int_equal(c.output_tokens, 9);
	}
	snap = ledger_snapshot();
	json_array_foreach (json_object_get(snap, "accounts"), i, one)
		assert_int_not_equal(json_integer_value(json_object_get(one, "ino")), 300);
	assert_int_equal(json_array_size(json_object_get(snap, "accounts")), 2);
	json_decref(snap);
	/* a new directory given number 300 has its budget's whole room */
	assert_int_equal(ledger_reserve(&h, &fresh, 1, NOV_30_LAST, &why), 0);
	ledger_charge(&h, &spent);
	ledger_usage(300, POLICY_PERIOD_MONTH, NOV_30_LAST, &c, &reserved);
	assert_int_equal(c.spent, 400);
	assert_int_equal(c.done, 1);
	assert_int_equal(reserved, 0);
	ledger_hold_free(&h);
}

/* Forgotten while a reservation is held there: only that reservation
 * stays until it is released; the job's charge goes to the ancestors
 * and not to the forgotten account, nor to a new directory that got its
 * number meanwhile, and nothing is left behind or negative. */
static void test_forget_with_a_reservation_held(void **state)
{
	struct ledger_charge before = { .cost = 100, .ok = 1, .when = NOV_30_LAST };
	struct ledger_charge late = {
		.cost = 250, .ok = 1, .input_tokens = 3, .output_tokens = 4, .when = NOV_30_LAST
	};
	struct ledger_budget none = { .acct = 1, .limit = INT64_MAX / 4 };
	struct ledger_hold old = hold_of(600), other = hold_of(50), fresh = hold_of(70);
	struct ledger_refusal why;
	struct ledger_counts c;
	nusd_t reserved;
	uint64_t *accts;
	size_t n;
	json_t *j;

	(void)state;
	ledger_apply(path3, 3, &before);
	assert_int_equal(ledger_reserve(&old, &none, 1, NOV_30_LAST, &why), 0);
	assert_int_equal(ledger_reserve(&other, &none, 1, NOV_30_LAST, &why), 0);
	assert_int_equal(ledger_forget(300), 1);
	ledger_usage(300, POLICY_PERIOD_MONTH, NOV_30_LAST, &c, &reserved);
	assert_int_equal(c.spent, 0);
	assert_int_equal(c.done, 0);
	assert_int_equal(reserved, 650); /* held, so the budgets keep counting it */
	assert_true(ledger_knows(300));
	/* what a job record or an end record says of the old holds: not 300 */
	j = ledger_hold_accts_json(&old);
	assert_int_equal(json_array_size(j), 2);
	assert_int_equal(json_integer_value(json_array_get(j, 1)), 20);
	json_decref(j);
	/* a new directory numbered 300 reserves (its hold is its own) */
	assert_int_equal(ledger_reserve(&fresh, &none, 1, NOV_30_LAST, &why), 0);
	ledger_usage(300, POLICY_PERIOD_MONTH, NOV_30_LAST, &c, &reserved);
	assert_int_equal(reserved, 720);
	j = ledger_hold_accts_json(&fresh);
	assert_int_equal(json_array_size(j), 3);
	json_decref(j);
	/* the old job ends: charged above, its room given back here */
	j = ledger_charge_to_json(&old, &late);
	assert_int_equal(ledger_charge_from_json(j, &accts, &n, &late), 0);
	assert_int_equal(n, 2);
	free(accts);
	json_decref(j);
	ledger_charge(&old, &late);
	ledger_usage(300, POLICY_PERIOD_TOTAL, NOV_30_LAST, &c, &reserved);
	assert_int_equal(c.spent, 0);
	assert_int_equal(c.done, 0);
	assert_int_equal(c.input_tokens, 0);
	assert_int_equal(reserved, 120);
	ledger_usage(20, POLICY_PERIOD_TOTAL, NOV_30_LAST, &c, &reserved);
	assert_int_equal(c.spent, 350);
	assert_int_equal(c.done, 2);
	assert_int_equal(c.output_tokens, 4);
	assert_int_equal(reserved, 120);
	/* twice is once, and never below zero */
	ledger_release(&old);
	ledger_release(&other);
	ledger_release(&other);
	ledger_usage(300, POLICY_PERIOD_TOTAL, NOV_30_LAST, &c, &reserved);
	assert_int_equal(reserved, 70);
	/* the new directory's own job is charged to it */
	ledger_charge(&fresh, &before);
	ledger_usage(300, POLICY_PERIOD_TOTAL, NOV_30_LAST, &c, &reserved);
	assert_int_equal(c.spent, 100);
	assert_int_equal(c.done, 1);
	assert_int_equal(reserved, 0);
	ledger_usage(1, POLICY_PERIOD_TOTAL, NOV_30_LAST, &c, &reserved);
	assert_int_equal(c.spent, 450);
	assert_int_equal(reserved, 0);
	ledger_hold_free(&old);
	ledger_hold_free(&other);
	ledger_hold_free(&fresh);
}

/* Forgotten with a reservation held, and no new directory: once it is
 * released nothing is left of the account, and a charge of the old
 * hold does not bring it back. */
static void test_forget_then_release_leaves_nothing(void **state)
{
	struct ledger_charge late = { .cost = 30, .ok = 0, .when = NOV_30_LAST };
	struct ledger_budget none = { .acct = 1, .limit = INT64_MAX / 4 };
	struct ledger_hold h = hold_of(80);
	struct ledger_refusal why;
	struct ledger_counts c;
	nusd_t reserved;
	json_t *snap;

	(void)state;
	assert_int_equal(ledger_reserve(&h, &none, 1, NOV_30_LAST, &why), 0);
	assert_int_equal(ledger_forget(300), 1);
	ledger_charge(&h, &late);
	assert_false(ledger_knows(300));
	ledger_usage(300, POLICY_PERIOD_TOTAL, NOV_30_LAST, &c, &reserved);
	assert_int_equal(c.spent, 0);
	assert_int_equal(c.failed, 0);
	assert_int_equal(reserved, 0);
	ledger_usage(20, POLICY_PERIOD_TOTAL, NOV_30_LAST, &c, &reserved);
	assert_int_equal(c.spent, 30);
	assert_int_equal(c.failed, 1);
	assert_int_equal(reserved, 0);
	snap = ledger_snapshot();
	assert_int_equal(json_array_size(json_object_get(snap, "accounts")), 2);
	json_decref(snap);
	ledger_hold_free(&h);
}

/* Replay, in the journal's order: the snapshot, the charges after it,
 * the forget record, then a new directory's charge to the same number:
 * only the last one is that account's. */
static void test_forget_record_replayed_in_order(void **state)
{
	struct ledger_charge early = { .cost = 500, .ok = 1, .when = NOV_30_LAST };
	struct ledger_charge after = { .cost = 20, .ok = 1, .when = NOV_30_LAST };
	struct ledger_counts c;
	nusd_t reserved;
	json_t *snap, *rec, *back;
	char *text;

	(void)state;
	ledger_apply(path3, 3, &early);
	snap = ledger_snapshot();
	ledger_destroy(); /* a crash */
	rec = ledger_forget_record(300);
	text = json_dumps(rec, JSON_COMPACT);
	assert_string_equal(text, "{\"t\":\"forget\",\"acct\":300}");
	back = json_loads(text, 0, NULL);
	assert_int_equal(ledger_restore(snap), 0);
	ledger_apply(path3, 3, &early);
	assert_int_equal(ledger_forget_replay(back), 0);
	ledger_apply(path3, 3, &after);
	ledger_usage(300, POLICY_PERIOD_TOTAL, NOV_30_LAST, &c, &reserved);
	assert_int_equal(c.spent, 20);
	assert_int_equal(c.done, 1);
	ledger_usage(20, POLICY_PERIOD_TOTAL, NOV_30_LAST, &c, &reserved);
	assert_int_equal(c.spent, 1020);
	assert_int_equal(c.done, 3);
	json_decref(back);
	back = json_pack("{s:s, s:s}", "t", "forget", "acct", "x");
	assert_int_equal(ledger_forget_replay(back), -EINVAL);
	json_decref(back);
	free(text);
	json_decref(rec);
	json_decref(snap);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_money_format),
		cmocka_unit_test(test_periods),
		cmocka_unit_test_setup(test_reserve_exact_fit, reset),
		cmocka_unit_test_setup(test_charge_releases_rest, reset),
		cmocka_unit_test_setup(test_every_budget_applies, reset),
		cmocka_unit_test_setup(test_rollover, reset),
		cmocka_unit_test_setup(test_snapshot_restore, reset),
		cmocka_unit_test_setup(test_charge_json, reset),
		cmocka_unit_test_setup(test_forget_drops_the_figures, reset),
		cmocka_unit_test_setup(test_forget_with_a_reservation_held, reset),
		cmocka_unit_test_setup(test_forget_then_release_leaves_nothing, reset),
		cmocka_unit_test_setup(test_forget_record_replayed_in_order, reset),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
