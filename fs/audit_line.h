/* The text of one line of state_dir/audit.jsonl (SPEC §8): pure
 * functions, no file, no state, so that the format is tested on its own
 * (tests/unit/test_audit.c). fs/audit.c decides what goes in a line and
 * when it is written.
 *
 * A line is one JSON object, its keys always in this order and always
 * present (null where they do not apply):
 *
 *   {"time":…,"journal_id":…,"submitted":…,"outcome":…,"errno":…,
 *    "reason":…,"uid":…,"pid":…,"path":…,"route":…,"attempts":[…],
 *    "tokens":{"input":…,"output":…},"cost_usd":…,"prompt_sha256":…,
 *    "response_sha256":…}
 *
 * and, only under the policy audit_prompts, "prompt" and "response" (the
 * texts) after them. The texts come last so that a line's key (journal
 * id and submission time) is read from its first bytes however long the
 * texts are. */
#ifndef PROMPTFS_AUDIT_LINE_H
#define PROMPTFS_AUDIT_LINE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* An ISO-8601 UTC time, "2026-11-26T10:00:00Z", with its NUL. */
#define AUDIT_TIME_SIZE 21

struct audit_record {
	const char *time;	     /* when it ended, or was refused */
	uint64_t journal_id;	     /* 0: none (a refusal) */
	const char *submitted;	     /* .meta's submitted; NULL for a refusal */
	const char *outcome;	     /* done, failed, cancelled, refused */
	const char *errno_name;	     /* a refusal's errno ("EDQUOT"); else NULL */
	const char *reason;	     /* a refusal's or a failure's sentence; else NULL */
	long long uid;		     /* -1: not known */
	long long pid;		     /* -1: not known */
	const char *path;	     /* the prompt's path, mountpoint included */
	const char *route;	     /* the deployment that answered; NULL if none */
	const json_t *attempts;	     /* .meta's attempts; NULL: [] */
	int has_tokens;		     /* .meta has usage */
	long long input_tokens;	     /* with has_tokens */
	long long output_tokens;     /* with has_tokens */
	int has_cost;		     /* .meta has cost_usd */
	double cost_usd;	     /* with has_cost */
	const char *prompt_sha256;   /* NULL: not known */
	const char *response_sha256; /* NULL: no answer (only a done job has one) */
};

/* The line of R without its closing "}\n", so that the texts can be
 * streamed after it: the caller writes them (",\"prompt\":\"…\"") and
 * then AUDIT_LINE_END. NULL on allocation failure; caller frees. */
char *audit_line_head(const struct audit_record *r, size_t *len);
#define AUDIT_LINE_END "}\n"

/* Money in fixed decimal notation, as awk and COBOL read it: at most 10
 * decimals, trailing zeros dropped ("0.0000036", "12.5", "0"). */
void audit_format_usd(double usd, char *buf, size_t size);

/* The bytes needed in OUT by audit_json_escape for LEN bytes of input. */
#define AUDIT_ESCAPE_MAX(len) ((len)*6)

/* Escapes IN (LEN bytes) as the inside of a JSON string into OUT (room
 * for AUDIT_ESCAPE_MAX(LEN)): '"', '\\' and control characters escaped,
 * well-formed UTF-8 kept as it is, and each byte that starts no
 * well-formed sequence written as U+FFFD. A sequence cut by the end of
 * IN is left for the next call (*USED < LEN) unless FINAL. Returns the
 * bytes written to OUT; *USED gets the input bytes consumed. Text
 * streamed in pieces is escaped the same as in one piece. */
size_t audit_json_escape(const char *in, size_t len, int final, char *out, size_t *used);

/* A line's key, from its first LEN bytes (enough of it: the head's first
 * keys): its journal id (0 for a refusal) and, for a job, its
 * submission time into SUBMITTED. 0, or -1 when the bytes are not the
 * start of a line audit_line_head made. */
int audit_line_key(const char *line, size_t len, uint64_t *journal_id,
		   char submitted[AUDIT_TIME_SIZE]);

#endif
