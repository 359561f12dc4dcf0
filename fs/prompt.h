/* Reading a .prompt file into a provider-neutral request (SPEC §5.2),
 * applying the policy's defaults to it, and sizing it for the cost
 * estimate (SPEC §6.4). */
#ifndef PROMPTFS_PROMPT_H
#define PROMPTFS_PROMPT_H

#include <stddef.h>

#include "backends/backend.h"

/* How a directory reads its prompts (the policy key prompt_format). */
enum prompt_format {
	PROMPT_FORMAT_AUTO, /* a JSON object with a "messages" array is a request, else text */
	PROMPT_FORMAT_TEXT, /* always plain text */
	PROMPT_FORMAT_JSON, /* always a JSON request: anything else is EINVAL */
};

/* Parses the LEN bytes of BUF as FORMAT says (SPEC §5.2): plain UTF-8
 * text becomes one user message holding the text exactly; a JSON request
 * (messages, temperature, max_tokens, stop; nothing else) becomes those.
 * Under auto a JSON object with a "messages" array is a request, and
 * anything else, text starting with '{' included, is text. *IS_JSON (may
 * be NULL) says which it was. Returns 0 with *OUT filled (caller frees
 * its members with llm_request_release); -ENODATA for an empty or
 * all-blank prompt, which is not to be submitted; -EILSEQ for text that
 * is not UTF-8, -EINVAL for a JSON request that is malformed; -ENOMEM. On failure
 * *OUT holds nothing to free and ERR (ERR_SIZE bytes, may be 0) holds a
 * sentence naming the offending byte offset or key. */
int prompt_parse_as(const char *buf, size_t len, enum prompt_format format, struct llm_request *out,
		    int *is_json, char *err, size_t err_size);

/* Whether BUF (LEN bytes), written right after BEFORE (the BEFORE_LEN,
 * at most 3, bytes that precede it in the prompt), keeps the prompt
 * UTF-8 so far: 0, or -EILSEQ at the first byte that cannot be, a NUL
 * included. A character cut by the end of BUF is not judged: the next
 * write may finish it (close() checks the whole text). */
int prompt_utf8_continues(const char *before, size_t before_len, const char *buf, size_t len);

/* prompt_parse_as with PROMPT_FORMAT_AUTO. */
int prompt_parse(const char *buf, size_t len, struct llm_request *out, char *err, size_t err_size);

/* Applies a policy's defaults where the prompt said nothing: SYSTEM
 * (NULL or "": none) becomes a first system message when REQ has no
 * system message; TEMPERATURE when HAS_TEMPERATURE and REQ has none;
 * MAX_OUTPUT_TOKENS_CAP (0: no cap) bounds max_tokens, or becomes it when
 * the prompt gave none. Returns 0, or -ENOMEM with REQ unchanged. */
int prompt_apply_defaults(struct llm_request *req, const char *system, int has_temperature,
			  double temperature, long max_output_tokens_cap);

/* The bytes that bound the request's input tokens: every message's
 * content plus 8 per message for its framing. */
long prompt_bytes_for_cost(const struct llm_request *req);

#endif
