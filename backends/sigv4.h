/* AWS Signature Version 4, header flavour (AWS4-HMAC-SHA256).
 *
 * Pure computation: no I/O, no clock. The caller passes the time, so a
 * signature can be reproduced in tests, and adds the resulting headers to
 * its request itself. Only the headers given in the input are signed,
 * plus the ones this module adds (X-Amz-Date, X-Amz-Security-Token,
 * X-Amz-Content-Sha256); whatever is signed must then be sent unchanged.
 *
 * Paths follow the rules of every service but S3: the path as sent on
 * the wire (already percent-encoded) is normalised when asked, then
 * percent-encoded once more. A Bedrock model id "a:0" travels as "a%3A0"
 * and is signed as "a%253A0". */
#ifndef PROMPTFS_SIGV4_H
#define PROMPTFS_SIGV4_H

#include <stddef.h>
#include <time.h>

/* One request header; both strings borrowed. Names are compared without
 * regard to case; values may hold folded lines (whitespace runs, including
 * line breaks, count as one space). */
struct sigv4_header {
	const char *name;
	const char *value;
};

/* Everything a signature depends on. All pointers are borrowed for the
 * duration of sigv4_sign() only. */
struct sigv4_input {
	const char *method; /* "POST" */
	const char *path;   /* as on the wire, e.g. "/model/a%3A0/converse"; "" means "/" */
	const char *query;  /* without '?'; NULL or "" for none */
	const struct sigv4_header *headers; /* must include Host */
	size_t n_headers;
	const void *payload; /* body bytes (may be NULL when payload_len is 0) */
	size_t payload_len;
	const char *payload_sha256_hex; /* if set, used instead of hashing payload */
	const char *region;		/* credential scope: "us-east-1" */
	const char *service;		/* "bedrock" */
	const char *access_key_id;
	const char *secret_access_key;
	const char *session_token;  /* NULL for long-term keys */
	time_t when;		    /* signing time, UTC */
	int normalize_path;	    /* remove "." / ".." segments, collapse "//" */
	int sign_content_sha256;    /* add and sign X-Amz-Content-Sha256 */
	int session_token_unsigned; /* token header sent but left out of the signature */
};

/* The artefacts of one signature. sigv4_sign() fills it; the heap strings
 * are owned by the struct and freed by sigv4_result_release(). */
struct sigv4_result {
	char amz_date[17];	     /* X-Amz-Date value: "20150830T123600Z" */
	char payload_sha256_hex[65]; /* X-Amz-Content-Sha256 value */
	char signature_hex[65];
	char *canonical_request;
	char *string_to_sign;
	char *signed_headers; /* "content-type;host;x-amz-date" */
	char *authorization;  /* Authorization header value */
};

/* Signs IN. Returns 0 and fills OUT, or -EINVAL for a missing field or a
 * header this module owns (X-Amz-Date, X-Amz-Security-Token,
 * X-Amz-Content-Sha256, Authorization) already present in IN, or
 * -ENOMEM. On failure OUT holds nothing to free. */
int sigv4_sign(const struct sigv4_input *in, struct sigv4_result *out);

void sigv4_result_release(struct sigv4_result *out);

/* Percent-encodes LEN bytes of SRC keeping only A-Z a-z 0-9 - _ . ~
 * (and '/' when KEEP_SLASH), uppercase hex. Returns 0 and a new
 * NUL-terminated string in *OUT (caller frees), or -ENOMEM. */
int sigv4_uri_encode(const char *src, size_t len, int keep_slash, char **out);

/* Lowercase hex SHA-256 of LEN bytes into HEX (65 bytes with the NUL).
 * Returns 0, or -EIO if the digest failed. */
int sigv4_sha256_hex(const void *data, size_t len, char hex[65]);

#endif
