/* The Chat Completions wire format (request body, streamed answer,
 * error bodies), shared by the openai backend (also Ollama, llama.cpp,
 * vLLM) and the azure backend. */
#ifndef PROMPTFS_OPENAI_CHAT_H
#define PROMPTFS_OPENAI_CHAT_H

#include <stddef.h>

#include "backends/backend.h"

/* Largest SSE event accepted from a stream: one chunk is a few hundred
 * bytes, so this only stops a runaway. */
#define OPENAI_CHAT_MAX_EVENT_BYTES (1024 * 1024)
/* Largest non-streamed JSON answer accepted. */
#define OPENAI_CHAT_MAX_JSON_BYTES (4 * 1024 * 1024)

/* The streaming request body for REQ: model (left out when MODEL is NULL,
 * as Azure names the deployment in the URL), messages, stream with usage,
 * temperature, max_tokens and stop when set. REQ's strings must be valid
 * UTF-8 (prompt_parse guarantees it). Returns 0 and a malloc'd,
 * NUL-terminated body in *OUT (caller frees) of *OUT_LEN bytes, or
 * -ENOMEM with *OUT set to NULL. */
int openai_chat_body(const struct llm_request *req, const char *model, char **out, size_t *out_len);

/* The answer parser, with the signatures of struct backend (built on
 * sse_answer.h). It reads a text/event-stream of chat.completion.chunk
 * objects ending with "data: [DONE]", or a whole chat.completion object
 * when the server did not stream. parser_feed returns 0; -EIO with ERR
 * filled for malformed data, an in-band error or an answer over its cap;
 * -ENOMEM; or the negative value EV->text returned (ERR then says the
 * answer was not taken). After a failure every later call repeats it.
 * parser_free accepts NULL. */
struct stream_parser *openai_chat_parser_new(const struct answer_events *ev, void *ctx);
int openai_chat_parser_feed(struct stream_parser *p, const char *data, size_t len,
			    struct attempt_error *err);
int openai_chat_parser_finish(struct stream_parser *p, struct attempt_error *err);
void openai_chat_parser_free(struct stream_parser *p);

/* Explains a non-2xx answer: retryable per SPEC §7 unless the server's
 * x-should-retry says otherwise, the wait it asks for, outcome
 * "http_<status>", and a sentence with the provider's own message taken
 * leniently from BODY (LEN bytes, need not be NUL-terminated). */
void openai_chat_classify_error(const struct http_response_head *head, const char *body, size_t len,
				struct attempt_error *err);

#endif
