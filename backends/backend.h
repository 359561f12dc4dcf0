/* The provider interface: one constant table of function pointers per
 * provider (backends/<provider>.c), in the manner of curl's Curl_ssl.
 *
 * A backend turns the provider-neutral request into one HTTP request,
 * parses the answer incrementally as it streams, and explains failures.
 * It knows nothing of FUSE, inodes or files: the engine drives it and
 * reports to whoever submitted the job through a sink (engine.h). */
#ifndef PROMPTFS_BACKEND_H
#define PROMPTFS_BACKEND_H

#include <stddef.h>
#include <curl/curl.h>

#include "backends/outcome.h"
#include "mountopts/config.h"

/* One message of the provider-neutral request (SPEC §5.2). */
struct llm_message {
	char *role;    /* "system", "user" or "assistant" */
	char *content; /* UTF-8 */
};

/* The provider-neutral request. Owns its members; llm_request_release()
 * frees them (not the struct itself). */
struct llm_request {
	struct llm_message *messages;
	size_t n_messages;
	int has_temperature;
	double temperature;
	long max_tokens; /* 0: not set */
	char **stop;
	size_t n_stop;
};

void llm_request_release(struct llm_request *req);

/* Bounds REQ's max_tokens by CAP (0: no cap): a request may ask for
 * fewer tokens, never for more, and one that asks nothing gets CAP. */
void llm_request_cap_tokens(struct llm_request *req, long cap);

/* What a parser reports while it reads an answer. Called on the engine
 * thread. */
struct answer_events {
	/* Next bytes of the answer's text. 0, or -errno to abort. */
	int (*text)(void *ctx, const char *bytes, size_t len);
	/* Latest token counts; -1 for a count not (yet) known. */
	void (*usage)(void *ctx, long input_tokens, long output_tokens);
	/* How the answer ended; PROVIDER_WORD is the provider's own word
	 * (or, for FINISH_FILTERED, what its safety system said), kept
	 * for FINISH_OTHER and for the sentence of a filtered answer. The
	 * engine decides what a filtered answer means: the backend only
	 * reports it. */
	void (*finish_reason)(void *ctx, enum finish_reason reason, const char *provider_word);
	void (*request_id)(void *ctx, const char *id);
};

/* Why an attempt failed: what it came to (the table in outcome.h says
 * what that means) and a sentence for .error. */
struct attempt_error {
	enum outcome outcome;
	long http_status;     /* the HTTP status behind it; 0 when none */
	double retry_after_s; /* < 0: the provider gave no hint */
	char message[512];    /* a sentence for .error, with the provider's own message */
};

void attempt_error_set(struct attempt_error *err, enum outcome outcome, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The same for an HTTP error answer with STATUS. */
void attempt_error_set_http(struct attempt_error *err, enum outcome outcome, long status,
			    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The word for .meta of ERR's outcome ("http_503", "stream_cut"), in a
 * buffer that lives as long as the enclosing block. */
#define ATTEMPT_ERROR_WORD(err) \
	outcome_word((err)->outcome, (err)->http_status, (char[32]){ 0 }, 32)

/* One HTTP request. Owns its members; http_request_release() frees them. */
struct http_request {
	char *url;
	struct curl_slist *headers;
	char *body;
	size_t body_len;
};

void http_request_release(struct http_request *req);

/* The response headers that classifiers read. Values are truncated to
 * the field size; an absent header is "". */
struct http_response_head {
	long status;
	char content_type[128];
	char request_id[128];
	char retry_after[64];
	char retry_after_ms[32];
	char amzn_error_type[256];
	char should_retry[16];
};

struct stream_parser; /* private to each backend */

/* Where and how to send: the deployment and its cloud's secrets. */
struct backend_target {
	const struct model *model;
	const struct credentials *credentials;
	const char *access_token; /* OAuth token fetched by the engine (vertex service accounts);
				     NULL otherwise */
};

struct backend {
	const char *name;
	/* Fills OUT with the streaming request for REQ at TARGET.
	 * Returns 0 or -errno (OUT then holds nothing to free). */
	int (*build_request)(const struct backend_target *target, const struct llm_request *req,
			     struct http_request *out);
	/* A new incremental parser of a 2xx body reporting to EV/CTX;
	 * NULL on allocation failure. */
	struct stream_parser *(*parser_new)(const struct answer_events *ev, void *ctx);
	/* Feeds the next body bytes, split anywhere. 0, or -EIO with ERR
	 * filled (malformed data, in-band error, answer over its cap). */
	int (*parser_feed)(struct stream_parser *p, const char *data, size_t len,
			   struct attempt_error *err);
	/* The body ended: 0 if the answer is complete, else -EIO with ERR
	 * (a cut stream is retryable). */
	int (*parser_finish)(struct stream_parser *p, struct attempt_error *err);
	void (*parser_free)(struct stream_parser *p);
	/* Explains a non-2xx response whose (capped) body is BODY. */
	void (*classify_error)(const struct http_response_head *head, const char *body, size_t len,
			       struct attempt_error *err);
	/* The service account whose OAuth token a request to CLOUD needs:
	 * the engine fetches the token (one refresh per cloud, shared by
	 * every job) and passes it in backend_target.access_token. NULL
	 * when the cloud's credentials go as they are; the hook itself may
	 * be NULL. */
	const struct google_service_account *(*oauth_account)(const struct cloud *cloud);
};

extern const struct backend backend_openai;
extern const struct backend backend_azure;
extern const struct backend backend_bedrock;
extern const struct backend backend_vertex;
extern const struct backend backend_anthropic;

/* The table for provider P; NULL if it is not built in. */
const struct backend *backend_for(enum provider p);

#endif
