/* The budget ledger (SPEC §6.4): what was spent and what is reserved in
 * each directory's subtree, so that `.usage` is one lookup at any depth
 * and a submission checks every budget on its path at once.
 *
 * An account belongs to one directory, named by its inode number in
 * state_dir/tree (stable across renames and remounts). A job is charged
 * to every directory from the root down to its own: each account holds
 * its subtree's figures, so nothing is summed when they are read.
 *
 * Money is counted in integer nano-dollars (1e-9 USD): sums are exact,
 * so "20 worst cases fit exactly" holds however the additions are
 * ordered, and nothing drifts with many reservations made and released.
 *
 * Spending is counted for the UTC day, the UTC month and in total at
 * once, so a policy that changes its budget_period finds the right
 * figure at once. A new day or month starts at zero (lazily: an account
 * keeps the key of the period it last counted). Reservations belong to
 * no period: a job reserved yesterday still holds its room today.
 *
 * Durability is the journal's (job_journal.c): a job's record carries
 * its reservation, its end record the charge, and a checkpoint writes a
 * snapshot (ledger_snapshot) as the first record of the new segment,
 * and a removed directory's account is dropped by a forget record
 * (ledger_forget).
 * This file does no I/O; the clock is the caller's, so tests can move
 * it. Thread-safe: one mutex, held for a few additions. */
#ifndef PROMPTFS_LEDGER_H
#define PROMPTFS_LEDGER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "fs/policy.h"

/* Nano-dollars. */
typedef int64_t nusd_t;
#define NUSD_PER_USD 1000000000LL

/* USD to nano-dollars, rounded up (a worst case must not shrink) or to
 * the nearest (a charge); a value too large to count saturates. */
nusd_t nusd_ceil(double usd);
nusd_t nusd_round(double usd);

/* "0.000486", "50", "12.5": fixed decimal, no exponent, no trailing
 * zeros, so awk and COBOL read it. BUF of at least 32 bytes. */
const char *nusd_format(nusd_t v, char *buf, size_t size);

/* A subtree's figures in one period. */
struct ledger_counts {
	nusd_t spent;
	uint64_t done, failed; /* requests */
	uint64_t input_tokens, output_tokens;
};

/* A reservation: the directories it is charged to (root first) and its
 * amount. HELD says whether the amount is counted now; every function
 * below that changes it does so under the ledger's lock, so a
 * reservation is released once however many paths try. EPOCH is the
 * number of accounts forgotten (ledger_forget) when it was held: an
 * account forgotten after that is no longer its to charge. */
struct ledger_hold {
	uint64_t *accts;
	size_t n;
	nusd_t amount;
	int held;
	uint64_t epoch;
};

/* One budget a reservation must fit in: the account of the directory
 * that sets it, its size and period. */
struct ledger_budget {
	uint64_t acct;
	nusd_t limit;
	enum policy_budget_period period;
	size_t level; /* where it was set, for the caller's sentence */
};

/* Why a reservation did not fit: the budget (index in the caller's
 * array) and its figures. */
struct ledger_refusal {
	size_t which;
	nusd_t spent, reserved;
};

/* What a finished job cost. */
struct ledger_charge {
	nusd_t cost;
	int ok; /* 1 done, 0 failed, -1 cancelled (no request counted) */
	uint64_t input_tokens, output_tokens;
	time_t when;
};

void ledger_init(void);
void ledger_destroy(void);

/* The period key of PERIOD at NOW (UTC): 20261129 for a day, 202611 for a
 * month, 0 for total; and its label ("2026-11-29", "2026-11", "total"). */
long ledger_period_key(enum policy_budget_period period, time_t now);
void ledger_period_label(enum policy_budget_period period, time_t now, char *buf, size_t size);

/* Reserves H->amount in H's accounts if it fits in every one of the N
 * BUDGETS at NOW (spent in the budget's period + reserved + amount <=
 * limit): all or nothing, atomically against every other reservation.
 * 0 with H held; -EDQUOT with the first budget that lacks room in WHY;
 * -ENOMEM. */
int ledger_reserve(struct ledger_hold *h, const struct ledger_budget *budgets, size_t n, time_t now,
		   struct ledger_refusal *why);

/* A held H grows to AMOUNT if the difference fits in every one of the N
 * BUDGETS at NOW (a smaller AMOUNT changes nothing): 0, or -EDQUOT with
 * the budget in WHY and H unchanged. */
int ledger_grow(struct ledger_hold *h, nusd_t amount, const struct ledger_budget *budgets, size_t n,
		time_t now, struct ledger_refusal *why);

/* The least room left in the N BUDGETS at NOW (limit - spent in its
 * period - reserved; may be negative); INT64_MAX without budgets. */
nusd_t ledger_room(const struct ledger_budget *budgets, size_t n, time_t now);

/* Holds H again whatever the budgets say: a job accepted before a
 * restart keeps its room. 0 or -ENOMEM. */
int ledger_hold_again(struct ledger_hold *h);

/* Gives H's amount back, if held. */
void ledger_release(struct ledger_hold *h);

/* A job ended: its reservation H is released (if held) and C charged to
 * H's accounts, in C->when's periods, but to none forgotten since H was
 * held. Called before H's release, as every caller does (a job
 * cancelled is not charged): a forgotten account that H held alone is
 * gone once released, and a charge after that would make it again. */
void ledger_charge(struct ledger_hold *h, const struct ledger_charge *c);

/* Replay: C charged to the N accounts ACCTS (no reservation involved). */
void ledger_apply(const uint64_t *accts, size_t n, const struct ledger_charge *c);

/* Frees H's account list (without releasing it). */
void ledger_hold_free(struct ledger_hold *h);

/* The figures of ACCT in PERIOD at NOW, and what is reserved there now. */
void ledger_usage(uint64_t acct, enum policy_budget_period period, time_t now,
		  struct ledger_counts *out, nusd_t *reserved);

/* The directory of ACCT was removed: its account goes, so that a new
 * directory given the same inode number starts from nothing. Its
 * ancestors' accounts keep what was spent in it (that money was spent).
 * A reservation still held there (a job that outlived its directory:
 * one in a subdirectory moved elsewhere before) stays counted until it
 * is released, and is then gone with the account; that job's charge no
 * longer goes to it. 1 when there was an account to forget (the journal
 * must say so), 0 when there was none. */
int ledger_forget(uint64_t acct);

/* Whether ACCT has anything ledger_forget would have to forget: a cheap
 * look before the journal gate is taken for it. */
int ledger_knows(uint64_t acct);

/* The journal record of ledger_forget(ACCT) ({"t":"forget","acct":N}),
 * and the replay of one (0 or -EINVAL). */
json_t *ledger_forget_record(uint64_t acct);
int ledger_forget_replay(const json_t *record);

/* H's accounts, root first, but those forgotten since H was held: what
 * a job record says it reserved in. */
json_t *ledger_hold_accts_json(const struct ledger_hold *h);

/* JSON of a charge for an end record (its accounts as
 * ledger_hold_accts_json, the ones ledger_charge counts it in), and
 * back (0 or -EINVAL). */
json_t *ledger_charge_to_json(const struct ledger_hold *h, const struct ledger_charge *c);
int ledger_charge_from_json(const json_t *j, uint64_t **accts, size_t *n, struct ledger_charge *c);

/* Every account's spending (not the reservations: those come back with
 * the jobs that hold them), as a journal record of type "ledger"; and
 * the state that record describes, replacing the ledger's (0, -EINVAL,
 * -ENOMEM). */
json_t *ledger_snapshot(void);
int ledger_restore(const json_t *record);

#endif
