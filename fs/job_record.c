/* A job's durable record: the .meta text, its timestamps, the prompt's
 * hash, and reading a prompt within its size limit. */
#include <errno.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs/job_internal.h"
#include "fs/policy_store.h"
#include "fs/prompt.h"

static void job_iso_time(char *out, size_t size, time_t t)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void job_meta_set_time(json_t *meta, const char *key)
{
	char stamp[32];

	job_iso_time(stamp, sizeof(stamp), time(NULL));
	json_object_set_new(meta, key, json_string(stamp));
}

const char *job_status_word(enum job_status s)
{
	static const char *const words[] = { "queued", "running", "done", "failed", "cancelled" };

	return words[s];
}

/* TEXT (JSON) with the number after "cost_usd": in fixed decimal, so
 * that awk and COBOL read it (0.0000036, not 3.6e-06). Only a key can
 * hold that pattern: inside a string its quotes would be escaped. */
static char *money_fixed(const char *text)
{
	static const char key[] = "\"cost_usd\":";
	const char *at = strstr(text, key), *number, *rest;
	char digits[32], *out;
	size_t head;

	if (!at)
		return strdup(text);
	number = at + sizeof(key) - 1;
	nusd_format(nusd_round(strtod(number, (char **)&rest)), digits, sizeof(digits));
	head = (size_t)(number - text);
	out = malloc(head + strlen(digits) + strlen(rest) + 1);
	if (out) {
		memcpy(out, text, head);
		strcpy(out + head, digits);
		strcat(out, rest);
	}
	return out;
}

char *job_meta_dump(const json_t *meta, size_t *len)
{
	/* ten significant digits, then the cost in fixed decimal */
	char *text = json_dumps(meta, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
	char *fixed = text ? money_fixed(text) : NULL;
	char *with_newline;

	free(text);
	if (!fixed)
		return NULL;
	with_newline = name_with_suffix(fixed, "\n");
	free(fixed);
	if (with_newline && len)
		*len = strlen(with_newline);
	return with_newline;
}

void job_sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char digest[SHA256_DIGEST_LENGTH];

	SHA256(data, len, digest);
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
		snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

/* Reads a whole prompt, refusing more than the limit. Caller frees. */
/* A buffer for the prompt as large as the file says it is, plus one byte to
 * see its end (or a growth past the limit); a prompt written meanwhile
 * doubles it, never past the limit. Not max_prompt_bytes at once: a
 * megabyte per submission is an mmap and a munmap, for a few bytes. */
static char *prompt_buffer(int fd, size_t cap, size_t *size)
{
	struct stat st;
	size_t want = 4096;

	if (fstat(fd, &st) == 0 && st.st_size > 0 && (size_t)st.st_size < cap)
		want = (size_t)st.st_size + 1;
	if (want > cap + 1)
		want = cap + 1;
	*size = want;
	return malloc(want);
}

int job_read_prompt(int fd, char **out, size_t *len)
{
	size_t cap = pfs.opts->max_prompt_bytes;
	size_t size, have = 0;
	char *buf = prompt_buffer(fd, cap, &size);
	ssize_t n;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (have == size) {
			size_t bigger = size * 2 > cap + 1 ? cap + 1 : size * 2;
			char *grown = realloc(buf, bigger);

			if (!grown) {
				free(buf);
				return -ENOMEM;
			}
			buf = grown;
			size = bigger;
		}
		n = pread(fd, buf + have, size - have, (off_t)have);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			free(buf);
			return -errno;
		}
		if (n == 0)
			break;
		have += (size_t)n;
		if (have > cap) {
			free(buf);
			return -EFBIG;
		}
	}
	buf[have] = '\0'; /* the loop ended with room: have < size */
	*out = buf;
	*len = have;
	return 0;
}

int job_check_prompt(struct node *dir, int fd, char *err, size_t err_size)
{
	struct effective_policy e = { 0 };
	struct llm_request req = { 0 };
	struct job_limits limits;
	struct ledger_hold hold;
	struct route route;
	size_t len;
	char *text;
	int rc;

	rc = job_read_prompt(fd, &text, &len);
	if (rc == -EFBIG) {
		snprintf(err, err_size, "The prompt is larger than the limit of %zu bytes.",
			 pfs.opts->max_prompt_bytes);
		return rc;
	}
	if (rc < 0) {
		snprintf(err, err_size, "The prompt could not be read: %s.", strerror(-rc));
		return rc;
	}
	rc = policy_store_effective(dir, &e);
	if (rc == 0)
		rc = prompt_parse_as(text, len, job_policy_format_of(&e), &req, NULL, err,
				     err_size);
	/* and what the policies would say of it, budgets' room included
	 * (outside a model or family there is nothing to ask) */
	if (rc == 0) {
		rc = job_policy_admit(dir, &e, len, &req, &route, &limits, err, err_size);
		if (rc == -ENOENT)
			rc = 0;
		else if (rc == 0 && job_policy_reserve_route(dir, &e, &route, &req, &hold, err,
							     err_size) == 0) {
			ledger_release(&hold);
			ledger_hold_free(&hold);
		} else if (rc == 0) {
			rc = -EDQUOT;
		}
	}
	effective_release(&e);
	llm_request_release(&req);
	free(text);
	return rc;
}
