/* Small pieces of the HTTP wire that every provider backend needs:
 * header lines, endpoint URLs, bodies buffered under a cap, telling an
 * event stream from a plain JSON answer, and a parser's sticky failure.
 *
 *   http_header_append       appends "HEAD" "VALUE" to a curl header
 *                            list; refuses control bytes in VALUE (a line
 *                            end would inject headers) and wipes its
 *                            temporary copy, since VALUE is often a
 *                            secret. curl keeps its own copy in the list,
 *                            which the caller frees with
 *                            curl_slist_free_all.
 *   endpoint_trimmed_length  the length of an endpoint URL without its
 *                            trailing slashes, for "%.*s/path".
 *   capped_buffer_*          a growable byte buffer that refuses to grow
 *                            past its cap. It owns its bytes:
 *                            capped_buffer_release frees them.
 *   body_kind_detect         decides from the first non-blank byte
 *                            whether a 2xx body is SSE or plain JSON.
 *   error_message_flatten    turns line ends (any byte below ' ') of a
 *                            sentence for .error into spaces.
 *   answer_overflow_explain  the sentence for a body or event that went
 *                            over its cap, or for memory running out.
 *   answer_text_report       hands answer text on, saying why when it is
 *                            refused.
 *   parser_failure_*         the failure an answer parser remembers so
 *                            that every later call repeats it.
 *   stop_sequences_json      a request's stop sequences as a JSON array.
 *   json_body_dump           a JSON request body, numbers as written.
 *   http_error_explain       the sentence for a non-2xx answer.
 *   word_is_one_of           whether a provider's word is in a list.
 *
 * Nothing here takes a lock or keeps global state. */
#ifndef PROMPTFS_WIRE_UTIL_H
#define PROMPTFS_WIRE_UTIL_H

#include <stddef.h>

#include <curl/curl.h>
#include <jansson.h>

#include "backends/backend.h"

/* Appends the line HEAD followed by VALUE (HEAD carries the "Name: " and
 * may be a whole line with VALUE ""). Returns 0; -EINVAL when VALUE
 * holds a control byte (*LIST is then unchanged); -ENOMEM. */
int http_header_append(struct curl_slist **list, const char *head, const char *value);

/* The length of ENDPOINT without the trailing slashes that would double
 * the path appended to it ("http://host/v1/" and "http://host/v1" name
 * the same base). An int, ready for a "%.*s" conversion. */
int endpoint_trimmed_length(const char *endpoint);

/* Bytes from the network, kept NUL-terminated (the NUL is not counted
 * in LEN, nor against CAP). Zero it, or use capped_buffer_init. */
struct capped_buffer {
	char *data; /* owned; NULL until the first byte */
	size_t len;
	size_t alloc;
	size_t cap; /* most bytes LEN may reach; may change between appends */
};

void capped_buffer_init(struct capped_buffer *buf, size_t cap);

/* Appends LEN bytes of BYTES. Returns 0; -E2BIG when they would take
 * LEN past CAP; -ENOMEM. On failure the buffer is as it was. */
int capped_buffer_append(struct capped_buffer *buf, const char *bytes, size_t len);

/* Frees the bytes and empties BUF (its cap stays). */
void capped_buffer_release(struct capped_buffer *buf);

/* What a 2xx body turned out to be. */
enum body_kind {
	BODY_UNKNOWN, /* nothing but blanks seen yet */
	BODY_SSE,     /* text/event-stream, as asked for */
	BODY_JSON,    /* plain JSON: an error, or an answer not streamed */
};

/* Skips the blanks (space, tab, CR, LF, VT, FF) at the start of DATA
 * (LEN bytes), which mean nothing in either form. At the first other
 * byte, sets *KIND to BODY_JSON when JSON_STARTS holds that byte, else
 * to BODY_SSE; *KIND stays as it was when DATA is all blanks. Returns
 * how many bytes were skipped. */
size_t body_kind_detect(const char *data, size_t len, const char *json_starts,
			enum body_kind *kind);

/* Provider words may hold line ends; .error's first line must stay one.
 * Every byte of MESSAGE below ' ' becomes a space. */
void error_message_flatten(char *message);

/* Explains why bytes of an answer could not be taken in: RC -E2BIG as
 * "PROVIDER sent WHAT over CAP bytes" (outcome too_large, not retryable:
 * the same request brings the same answer), any other RC as memory
 * running out (no_memory, retryable). */
void answer_overflow_explain(int rc, const char *provider, const char *what, size_t cap,
			     struct attempt_error *err);

/* Hands LEN bytes of TEXT to EV->text (nothing when LEN is 0). Returns
 * 0, or the negative value EV->text returned with ERR saying the answer
 * could not be taken. */
int answer_text_report(const struct answer_events *ev, void *ctx, const char *text, size_t len,
		       struct attempt_error *err);

/* A parser's failure, kept so that every later call repeats it. Zero it
 * to start. */
struct parser_failure {
	int rc;			    /* 0, or the -errno first returned */
	struct attempt_error error; /* why, when RC is not 0 */
};

/* Flattens ERR's message, keeps ERR and RC in F, and returns RC. */
int parser_failure_remember(struct parser_failure *f, int rc, struct attempt_error *err);

/* 0 when F holds no failure; else copies it into ERR and returns its
 * rc. */
int parser_failure_repeat(const struct parser_failure *f, struct attempt_error *err);

/* REQ's stop sequences as a new JSON array of strings (caller decrefs);
 * NULL when memory runs out. */
json_t *stop_sequences_json(const struct llm_request *req);

/* ROOT as a request body: compact, with reals to 15 significant digits
 * (a temperature of 0.2 goes as 0.2, not 0.20000000000000001). Returns 0
 * and a new NUL-terminated string in *OUT (caller frees) of *OUT_LEN
 * bytes, or -ENOMEM with *OUT NULL. */
int json_body_dump(const json_t *root, char **out, size_t *out_len);

/* Sets ERR to OUTCOME and STATUS with the sentence for a non-2xx answer:
 * "PROVIDER answered HTTP STATUS", then " (KIND)" when the provider named
 * the kind of error, and ": MESSAGE" when it explained it; KIND and
 * MESSAGE may be NULL. The sentence is flattened to one line. */
void http_error_explain(struct attempt_error *err, enum outcome outcome, long status,
			const char *provider, const char *kind, const char *message);

/* Non-zero when WORD (NULL is no word) is one of the N strings of LIST. */
int word_is_one_of(const char *word, const char *const list[], size_t n);

#endif
