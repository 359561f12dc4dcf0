/* Directory policies (SPEC §6): one directory's own policy as its
 * `.policy` JSON and as `user.policy.KEY` extended attributes, the policy
 * in force at a directory once the chain from the root down to it is
 * composed, and the worst-case cost that caps and budgets are checked
 * against.
 *
 * Pure functions: no FUSE, no file, no lock, no clock. The caller reads
 * and stores `.policy` files, holds whatever lock keeps a chain stable
 * while it is composed, and decides what an answer means for an errno.
 *
 * Decisions where SPEC is silent:
 *   - a list (providers, residency) is a JSON array of strings in
 *     `.policy` (one string is taken as a list of one, as a region's
 *     `geo` is in the config), comma-separated text as an xattr (blanks
 *     around names trimmed). A name is non-empty, has no comma, no control character
 *     and no surrounding blank; duplicates are dropped, order is kept.
 *     An empty list is valid and allows nothing. Names are not checked
 *     against the config: a name no cloud or region has matches nothing,
 *     and a policy stays valid across config reloads.
 *   - temperature is 0 to 2, as in a JSON request (SPEC §5.2); timeouts
 *     are > 0 and at most a day (86400 s).
 *   - integers (max_output_tokens, max_prompt_bytes, retries) must be
 *     JSON integers: 5.0 is refused, like max_tokens in a request.
 *   - umask is a string of 1 to 4 octal digits, at most 0777; a JSON
 *     number is refused, since 77 would not say whether it is octal.
 *   - `system` may be "": that overrides an ancestor's system message
 *     with none.
 *   - max_prompt_bytes: the 1 MiB default is for a path where no level
 *     sets it, so the root's policy may raise it; below that, the
 *     smallest value wins.
 *   - budget_period qualifies the budget_usd of the same directory only;
 *     it may be set without one (xattrs arrive one at a time) and then
 *     does nothing.
 *   - xattr text: surrounding blanks (space, tab, CR, LF) are trimmed
 *     from every value but `system`, which is taken exactly. Numbers are
 *     decimal, with an optional fraction and exponent (no hex, inf, nan).
 */
#ifndef PROMPTFS_POLICY_H
#define PROMPTFS_POLICY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct model;

/* The keys, in SPEC §6.2 order: `.policy` is written in this order. */
enum policy_key {
	POLICY_PROVIDERS,
	POLICY_RESIDENCY,
	POLICY_MAX_REQUEST_USD,
	POLICY_MAX_OUTPUT_TOKENS,
	POLICY_MAX_PROMPT_BYTES,
	POLICY_BUDGET_USD,
	POLICY_BUDGET_PERIOD,
	POLICY_FALLBACK,
	POLICY_ORDER,
	POLICY_RETRIES,
	POLICY_TIMEOUT_S,
	POLICY_FIRST_TOKEN_TIMEOUT_S,
	POLICY_TEMPERATURE,
	POLICY_SYSTEM,
	POLICY_UMASK,
	POLICY_AUDIT_PROMPTS,
	POLICY_PROMPT_FORMAT,
	POLICY_N_KEYS,
};

#define POLICY_BIT(key) (1u << (key))

/* The xattr names: POLICY_XATTR_PREFIX "providers" is this directory's
 * own value, EFFECTIVE_XATTR_PREFIX "providers" the one in force. */
#define POLICY_XATTR_PREFIX "user.policy."
#define EFFECTIVE_XATTR_PREFIX "user.effective."

/* SPEC §6.2 defaults of the keys that have one. */
#define POLICY_DEFAULT_MAX_PROMPT_BYTES 1048576L
#define POLICY_DEFAULT_RETRIES 2

enum policy_budget_period {
	POLICY_PERIOD_DAY,
	POLICY_PERIOD_MONTH,
	POLICY_PERIOD_TOTAL,
};

enum policy_order {
	POLICY_ORDER_CONFIG,
	POLICY_ORDER_PRICE,
	POLICY_ORDER_LATENCY,
};

enum policy_prompt_format {
	POLICY_FORMAT_AUTO,
	POLICY_FORMAT_TEXT,
	POLICY_FORMAT_JSON,
};

/* A list of names (clouds, geo tags). Owns its strings. */
struct policy_list {
	char **names;
	size_t n;
};

/* One directory's own policy. SET has POLICY_BIT(key) for every key this
 * directory sets; a field whose bit is clear holds nothing (zero). A
 * zeroed struct sets nothing. Owns its lists and `system`: free them
 * with policy_release. */
struct policy {
	unsigned set;
	struct policy_list providers;
	struct policy_list residency;
	double max_request_usd;
	long max_output_tokens;
	long max_prompt_bytes;
	double budget_usd;
	enum policy_budget_period budget_period;
	int fallback;
	enum policy_order order;
	long retries;
	double timeout_s;
	double first_token_timeout_s;
	double temperature;
	char *system;
	unsigned umask;
	int audit_prompts;
	enum policy_prompt_format prompt_format;
};

/* The name of KEY ("providers"); NULL for a value that is not a key. */
const char *policy_key_name(enum policy_key key);

/* The key named NAME (without the xattr prefix), or -EINVAL. */
int policy_key_from_name(const char *name);

/* The word of a budget period: "day", "month", "total". */
const char *policy_budget_period_name(enum policy_budget_period period);

/* Parses the LEN bytes of a `.policy` file. Empty or blank text and {}
 * set nothing. Returns 0 with *OUT filled (free with policy_release), or
 * -EINVAL for text that is not a JSON object, an unknown key or a bad
 * value, -ENOMEM; then *OUT holds nothing to free and ERR (ERR_SIZE
 * bytes, may be 0) a one-line sentence naming the key, e.g.
 * "max_request_usd must be a number >= 0". */
int policy_parse(const char *text, size_t len, struct policy *out, char *err, size_t err_size);

/* The canonical `.policy` text of P: the keys it sets in enum order, one
 * per line with a two-space indent, lists on one line, a final newline;
 * "{}\n" when P sets nothing. policy_parse gives back an equal policy.
 * Returns a string the caller frees, or NULL when out of memory. */
char *policy_to_json(const struct policy *p);

/* Sets KEY of P from the xattr text VALUE (LEN bytes, need not end in a
 * NUL). Returns 0, or -EINVAL with the sentence in ERR and P unchanged,
 * or -ENOMEM with P unchanged. */
int policy_set_value(struct policy *p, enum policy_key key, const char *value, size_t len,
		     char *err, size_t err_size);

/* Removes KEY from P. Returns 0, or -ENODATA when P did not set it. */
int policy_unset(struct policy *p, enum policy_key key);

/* The xattr text of KEY in P: lists joined with ",", numbers in the
 * shortest decimal that reads back the same ("0.25", "50"), integers in
 * decimal, true/false, the words, umask as three octal digits ("077"),
 * system as it is. Returns 0 and a string in *OUT that the caller frees,
 * -ENODATA when P does not set KEY, or -ENOMEM. */
int policy_get_value(const struct policy *p, enum policy_key key, char **out);

/* listxattr of a directory with policy P: the names
 * POLICY_XATTR_PREFIX KEY of the keys P sets, each ending in a NUL, in
 * enum order. With SIZE 0, returns the bytes needed and writes nothing;
 * else writes them to BUF and returns their count, or -ERANGE when SIZE
 * is too small. */
ssize_t policy_list_keys(const struct policy *p, char *buf, size_t size);

/* Deep copy: 0, or -ENOMEM with *DST holding nothing to free. */
int policy_copy(struct policy *dst, const struct policy *src);

/* Non-zero when A and B set the same keys to the same values. */
int policy_equal(const struct policy *a, const struct policy *b);

/* Frees P's members and leaves it setting nothing. P may be NULL. */
void policy_release(struct policy *p);

/* One budget on the path: every one of them applies (SPEC §6.4). */
struct policy_budget {
	size_t level; /* index in the chain of the directory that set it */
	double usd;
	enum policy_budget_period period; /* that directory's, else month */
};

/* The policy in force at a directory (SPEC §6.2 composition). Owns its
 * lists, budgets and system: free with effective_release. */
struct effective_policy {
	/* Constraints: when a level sets the key, *_CONSTRAINED is 1 and
	 * only the names of the intersection are allowed (none when it is
	 * empty), in the order of the topmost level that sets the key;
	 * else anything is allowed. */
	int providers_constrained;
	struct policy_list providers;
	int residency_constrained;
	struct policy_list residency;

	/* Caps: the smallest value along the path. */
	int has_max_request_usd;
	double max_request_usd;
	long max_output_tokens; /* 0: no cap (the model's own applies) */
	long max_prompt_bytes;	/* default POLICY_DEFAULT_MAX_PROMPT_BYTES */

	/* Every level's budget, root first. */
	struct policy_budget *budgets;
	size_t n_budgets;

	/* Preferences and defaults: the nearest level that sets one wins. */
	int fallback; /* default: 1 under any/, else 0 */
	enum policy_order order;
	long retries;
	double timeout_s;	      /* 0: the daemon's timeout= */
	double first_token_timeout_s; /* 0: none */
	int has_temperature;
	double temperature;
	char *system; /* NULL (or ""): no system message */
	unsigned umask;
	int audit_prompts;
	enum policy_prompt_format prompt_format;

	/* The directories composed, root first, by their inode numbers in
	 * state_dir (budgets[i].level indexes them): what the ledger
	 * charges. Filled by the caller that knows them (policy_store),
	 * freed by effective_release; policy_compose leaves them empty. */
	uint64_t *dirs;
	size_t n_dirs;
};

/* Composes CHAIN[0] (the root's policy) to CHAIN[N - 1] (the
 * directory's); a NULL entry is a directory without a policy. UNDER_ANY
 * says whether the directory is under any/ (the default of fallback).
 * Returns 0 with *OUT filled, or -ENOMEM with *OUT holding nothing to
 * free. */
int policy_compose(const struct policy *const *chain, size_t n, int under_any,
		   struct effective_policy *out);

/* The xattr text of user.effective.KEY, formatted as policy_get_value
 * does. Returns 0 and a string in *OUT that the caller frees; -ENODATA
 * for the budget keys (see .usage) and where nothing is in force: an
 * unconstrained list, an absent cap, temperature, system or timeout
 * that no level sets (the provider's, model's or daemon's own applies);
 * or -ENOMEM. */
int effective_get_value(const struct effective_policy *e, enum policy_key key, char **out);

/* Non-zero when a deployment on cloud CLOUD, in a region tagged
 * GEO_TAGS (N_TAGS of them), passes E's providers and residency: its
 * cloud is listed, and one of its tags is. */
int effective_allows(const struct effective_policy *e, const char *cloud,
		     const char *const *geo_tags, size_t n_tags);

/* effective_allows for a deployment of the config. */
int effective_allows_model(const struct effective_policy *e, const struct model *model);

void effective_release(struct effective_policy *e);

/* Worst-case cost in USD of one request (SPEC §6.4): PROMPT_BYTES are
 * the bytes of the prompt's messages, SYSTEM_BYTES those of a system
 * message the policy adds, N_MESSAGES every message sent (the added one
 * included), each reckoned at 8 bytes more for its framing; a token is
 * never less than a byte. MAX_OUTPUT_TOKENS is the bound sent to the
 * backend; 0 (none known) gives infinity unless output is free, so that
 * any limit refuses a cost it cannot bound. Prices are USD per million
 * tokens. */
double policy_worst_case_usd(size_t prompt_bytes, size_t system_bytes, size_t n_messages,
			     long max_output_tokens, double input_per_mtok, double output_per_mtok);

#endif
