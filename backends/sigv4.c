/* AWS Signature Version 4 header signing: canonical request, string to
 * sign, signing key and Authorization value (see sigv4.h). */
#include "backends/sigv4.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_TERMINATOR "aws4_request"

/* A growable string; once an allocation failed it stays failed, so the
 * builders below check once at the end instead of after every append.
 * Uncapped on purpose, unlike the capped_buffer of wire_util.h that holds
 * what the network sends: nothing here comes from the network. These
 * strings are made of the request this daemon is about to send (method,
 * path, query, header names and values from the config and the
 * credentials, a hash), so they are bounded by that request. */
struct text {
	char *buf;
	size_t len;
	size_t cap;
	int failed;
};

static void text_append(struct text *t, const char *src, size_t n)
{
	if (t->failed)
		return;
	if (t->len + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 128;
		char *grown;

		while (cap < t->len + n + 1)
			cap *= 2;
		grown = realloc(t->buf, cap);
		if (!grown) {
			t->failed = 1;
			return;
		}
		t->buf = grown;
		t->cap = cap;
	}
	memcpy(t->buf + t->len, src, n);
	t->len += n;
	t->buf[t->len] = '\0';
}

static void text_append_str(struct text *t, const char *s)
{
	text_append(t, s, strlen(s));
}

static void text_append_char(struct text *t, char c)
{
	text_append(t, &c, 1);
}

/* Hands the string over to the caller; NULL if any append failed. */
static char *text_take(struct text *t)
{
	char *s = NULL;

	if (!t->failed && !t->buf)
		text_append(t, "", 0);
	if (!t->failed) {
		s = t->buf;
		t->buf = NULL;
	}
	free(t->buf);
	t->buf = NULL;
	t->len = t->cap = 0;
	return s;
}

static void text_release(struct text *t)
{
	free(t->buf);
	t->buf = NULL;
	t->len = t->cap = 0;
}

static int is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.' || c == '~';
}

static void text_append_encoded(struct text *t, const char *src, size_t len, int keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];
		char escaped[3];

		if (is_unreserved(c) || (keep_slash && c == '/')) {
			text_append_char(t, (char)c);
			continue;
		}
		escaped[0] = '%';
		escaped[1] = hex[c >> 4];
		escaped[2] = hex[c & 0x0f];
		text_append(t, escaped, 3);
	}
}

int sigv4_uri_encode(const char *src, size_t len, int keep_slash, char **out)
{
	struct text t = { 0 };

	text_append_encoded(&t, src, len, keep_slash);
	*out = text_take(&t);
	return *out ? 0 : -ENOMEM;
}

static void bytes_to_hex(const unsigned char *bytes, size_t n, char *hex)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		hex[2 * i] = digits[bytes[i] >> 4];
		hex[2 * i + 1] = digits[bytes[i] & 0x0f];
	}
	hex[2 * n] = '\0';
}

int sigv4_sha256_hex(const void *data, size_t len, char hex[65])
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;

	if (!EVP_Digest(data ? data : "", len, digest, &digest_len, EVP_sha256(), NULL) ||
	    digest_len != 32)
		return -EIO;
	bytes_to_hex(digest, digest_len, hex);
	return 0;
}

/* --- canonical URI ------------------------------------------------- */

struct segment {
	const char *start;
	size_t len;
};

static int segment_is(const struct segment *s, const char *word)
{
	return s->len == strlen(word) && memcmp(s->start, word, s->len) == 0;
}

/* RFC 3986 dot-segment removal plus collapsing of empty segments, then
 * each surviving segment encoded. A path whose last segment is empty,
 * "." or ".." names a directory, so the result keeps its final '/'. */
static int append_normalized_path(struct text *t, const char *path)
{
	size_t n_max = 1, n = 0, i;
	struct segment *stack;
	struct segment last = { path, 0 };
	const char *p = path;

	for (i = 0; path[i]; i++)
		if (path[i] == '/')
			n_max++;
	stack = calloc(n_max, sizeof(*stack));
	if (!stack)
		return -ENOMEM;

	while (*p) {
		const char *end = strchr(p, '/');
		struct segment seg;

		if (*p == '/') {
			p++;
			continue;
		}
		seg.start = p;
		seg.len = end ? (size_t)(end - p) : strlen(p);
		last = seg;
		if (segment_is(&seg, "..")) {
			if (n > 0)
				n--;
		} else if (!segment_is(&seg, ".")) {
			stack[n++] = seg;
		}
		p += seg.len;
	}
	/* After the loop LAST is the final non-empty segment; the path
	 * ends in '/' (an empty last segment) if its final byte is one. */
	if (*path && path[strlen(path) - 1] == '/')
		last.len = 0;

	text_append_char(t, '/');
	for (i = 0; i < n; i++) {
		if (i > 0)
			text_append_char(t, '/');
		text_append_encoded(t, stack[i].start, stack[i].len, 0);
	}
	if (n > 0 && (last.len == 0 || segment_is(&last, ".") || segment_is(&last, "..")))
		text_append_char(t, '/');
	free(stack);
	return 0;
}

static int append_canonical_uri(struct text *t, const char *path, int normalize)
{
	if (!path || !*path) {
		text_append_char(t, '/');
		return 0;
	}
	if (normalize)
		return append_normalized_path(t, path);
	text_append_encoded(t, path, strlen(path), 1);
	return 0;
}

/* --- canonical query ----------------------------------------------- */

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* The query on the wire is already encoded; decoding first and encoding
 * again makes "%E1%88%B4" and a raw UTF-8 "ሴ" sign alike. A '%' not
 * followed by two hex digits is taken literally. */
static char *query_component_canonical(const char *src, size_t len)
{
	struct text decoded = { 0 }, encoded = { 0 };
	size_t i;
	char *out;

	for (i = 0; i < len; i++) {
		int hi = -1, lo = -1;

		if (src[i] == '%' && i + 2 < len) {
			hi = hex_value(src[i + 1]);
			lo = hex_value(src[i + 2]);
		}
		if (hi >= 0 && lo >= 0) {
			text_append_char(&decoded, (char)(hi << 4 | lo));
			i += 2;
			continue;
		}
		text_append_char(&decoded, src[i]);
	}
	if (decoded.failed) {
		text_release(&decoded);
		return NULL;
	}
	text_append_encoded(&encoded, decoded.buf ? decoded.buf : "", decoded.len, 0);
	text_release(&decoded);
	out = text_take(&encoded);
	return out;
}

struct query_param {
	char *key;
	char *value;
};

static int query_param_compare(const void *a, const void *b)
{
	const struct query_param *pa = a, *pb = b;
	int by_key = strcmp(pa->key, pb->key);

	return by_key ? by_key : strcmp(pa->value, pb->value);
}

static int append_canonical_query(struct text *t, const char *query)
{
	struct query_param *params = NULL;
	size_t n_max = 1, n = 0, i;
	const char *p = query;
	int ret = 0;

	if (!query || !*query)
		return 0;
	for (i = 0; query[i]; i++)
		if (query[i] == '&')
			n_max++;
	params = calloc(n_max, sizeof(*params));
	if (!params)
		return -ENOMEM;

	while (*p) {
		const char *end = strchr(p, '&');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', len);
		size_t key_len = eq ? (size_t)(eq - p) : len;

		if (len > 0) {
			params[n].key = query_component_canonical(p, key_len);
			params[n].value = eq ? query_component_canonical(eq + 1, len - key_len - 1)
					     : strdup("");
			n++;
			if (!params[n - 1].key || !params[n - 1].value) {
				ret = -ENOMEM;
				goto out;
			}
		}
		p += len;
		if (*p == '&')
			p++;
	}

	qsort(params, n, sizeof(*params), query_param_compare);
	for (i = 0; i < n; i++) {
		if (i > 0)
			text_append_char(t, '&');
		text_append_str(t, params[i].key);
		text_append_char(t, '=');
		text_append_str(t, params[i].value);
	}
out:
	for (i = 0; i < n; i++) {
		free(params[i].key);
		free(params[i].value);
	}
	free(params);
	return ret;
}

/* --- canonical headers --------------------------------------------- */

struct canonical_header {
	char *name;   /* lowercase */
	char *value;  /* trimmed, whitespace runs collapsed */
	size_t order; /* position in the input: keeps duplicates in order */
};

static int canonical_header_compare(const void *a, const void *b)
{
	const struct canonical_header *ha = a, *hb = b;
	int by_name = strcmp(ha->name, hb->name);

	if (by_name)
		return by_name;
	return ha->order < hb->order ? -1 : ha->order > hb->order;
}

static char *lowercase_copy(const char *s)
{
	char *copy = strdup(s);
	char *p;

	if (!copy)
		return NULL;
	for (p = copy; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	return copy;
}

static int is_header_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Folded lines arrive with their line breaks; treating every whitespace
 * run as one space folds them and trims in the same pass. */
static char *header_value_canonical(const char *value)
{
	char *out = malloc(strlen(value) + 1);
	size_t len = 0;
	int pending_space = 0;
	const char *p;

	if (!out)
		return NULL;
	for (p = value; *p; p++) {
		if (is_header_space(*p)) {
			pending_space = len > 0;
			continue;
		}
		if (pending_space)
			out[len++] = ' ';
		pending_space = 0;
		out[len++] = *p;
	}
	out[len] = '\0';
	return out;
}

static int is_owned_header(const char *lowercase_name)
{
	return strcmp(lowercase_name, "x-amz-date") == 0 ||
	       strcmp(lowercase_name, "x-amz-security-token") == 0 ||
	       strcmp(lowercase_name, "x-amz-content-sha256") == 0 ||
	       strcmp(lowercase_name, "authorization") == 0;
}

static int header_list_add(struct canonical_header *list, size_t *n, const char *name,
			   const char *value)
{
	struct canonical_header *h = &list[*n];

	h->name = lowercase_copy(name);
	h->value = header_value_canonical(value);
	h->order = *n;
	(*n)++;
	return h->name && h->value ? 0 : -ENOMEM;
}

/* Appends the canonical header block (each "name:value\n") to BLOCK and
 * the signed-header list to NAMES. */
static int build_canonical_headers(const struct sigv4_input *in, const struct sigv4_result *res,
				   struct text *block, struct text *names)
{
	struct canonical_header *list;
	size_t n = 0, i;
	int has_host = 0;
	int ret = 0;

	list = calloc(in->n_headers + 3, sizeof(*list));
	if (!list)
		return -ENOMEM;

	for (i = 0; i < in->n_headers; i++) {
		if (!in->headers[i].name || !in->headers[i].value || !*in->headers[i].name) {
			ret = -EINVAL;
			goto out;
		}
		ret = header_list_add(list, &n, in->headers[i].name, in->headers[i].value);
		if (ret < 0)
			goto out;
		if (is_owned_header(list[n - 1].name)) {
			ret = -EINVAL;
			goto out;
		}
		if (strcmp(list[n - 1].name, "host") == 0)
			has_host = 1;
	}
	if (!has_host) {
		ret = -EINVAL;
		goto out;
	}
	ret = header_list_add(list, &n, "x-amz-date", res->amz_date);
	if (ret == 0 && in->session_token && !in->session_token_unsigned)
		ret = header_list_add(list, &n, "x-amz-security-token", in->session_token);
	if (ret == 0 && in->sign_content_sha256)
		ret = header_list_add(list, &n, "x-amz-content-sha256", res->payload_sha256_hex);
	if (ret < 0)
		goto out;

	qsort(list, n, sizeof(*list), canonical_header_compare);
	for (i = 0; i < n; i++) {
		int same_as_previous = i > 0 && strcmp(list[i].name, list[i - 1].name) == 0;

		if (same_as_previous) {
			/* Repeated headers become one comma-separated line:
			 * the previous line's '\n' turns into the comma. */
			if (!block->failed)
				block->len--;
			text_append_char(block, ',');
		} else {
			if (i > 0)
				text_append_char(names, ';');
			text_append_str(names, list[i].name);
			text_append_str(block, list[i].name);
			text_append_char(block, ':');
		}
		text_append_str(block, list[i].value);
		text_append_char(block, '\n');
	}
out:
	for (i = 0; i < n; i++) {
		free(list[i].name);
		free(list[i].value);
	}
	free(list);
	return ret;
}

/* --- signing ------------------------------------------------------- */

static int hmac_sha256(const void *key, size_t key_len, const char *msg, unsigned char out[32])
{
	unsigned int out_len = 0;

	if (!HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, strlen(msg), out,
		  &out_len) ||
	    out_len != 32)
		return -EIO;
	return 0;
}

/* kSigning = HMAC chain over date, region, service, "aws4_request". */
static int derive_signing_key(const struct sigv4_input *in, const char *date, unsigned char key[32])
{
	size_t secret_len = strlen(in->secret_access_key);
	unsigned char *secret = malloc(secret_len + 4);
	unsigned char k_date[32], k_region[32], k_service[32];
	int ret;

	if (!secret)
		return -ENOMEM;
	memcpy(secret, "AWS4", 4);
	memcpy(secret + 4, in->secret_access_key, secret_len);

	ret = hmac_sha256(secret, secret_len + 4, date, k_date);
	if (ret == 0)
		ret = hmac_sha256(k_date, 32, in->region, k_region);
	if (ret == 0)
		ret = hmac_sha256(k_region, 32, in->service, k_service);
	if (ret == 0)
		ret = hmac_sha256(k_service, 32, SIGV4_TERMINATOR, key);

	/* Secret-derived material must not linger in freed memory. */
	OPENSSL_cleanse(k_date, sizeof(k_date));
	OPENSSL_cleanse(k_region, sizeof(k_region));
	OPENSSL_cleanse(k_service, sizeof(k_service));
	OPENSSL_cleanse(secret, secret_len + 4);
	free(secret);
	return ret;
}

static int is_blank(const char *s)
{
	return !s || !*s;
}

static int input_is_complete(const struct sigv4_input *in)
{
	return !is_blank(in->method) && !is_blank(in->region) && !is_blank(in->service) &&
	       !is_blank(in->access_key_id) && !is_blank(in->secret_access_key) &&
	       (in->headers || in->n_headers == 0) &&
	       (in->payload || in->payload_len == 0 || in->payload_sha256_hex);
}

static int fill_payload_hash(const struct sigv4_input *in, struct sigv4_result *out)
{
	if (in->payload_sha256_hex) {
		if (strlen(in->payload_sha256_hex) != 64)
			return -EINVAL;
		memcpy(out->payload_sha256_hex, in->payload_sha256_hex, 65);
		return 0;
	}
	return sigv4_sha256_hex(in->payload, in->payload_len, out->payload_sha256_hex);
}

static int build_canonical_request(const struct sigv4_input *in, struct sigv4_result *out)
{
	struct text creq = { 0 }, block = { 0 }, names = { 0 };
	int ret;

	text_append_str(&creq, in->method);
	text_append_char(&creq, '\n');
	ret = append_canonical_uri(&creq, in->path, in->normalize_path);
	if (ret < 0)
		goto out;
	text_append_char(&creq, '\n');
	ret = append_canonical_query(&creq, in->query);
	if (ret < 0)
		goto out;
	text_append_char(&creq, '\n');
	ret = build_canonical_headers(in, out, &block, &names);
	if (ret < 0)
		goto out;
	if (block.failed || names.failed) {
		ret = -ENOMEM;
		goto out;
	}
	text_append(&creq, block.buf, block.len);
	text_append_char(&creq, '\n');
	text_append(&creq, names.buf, names.len);
	text_append_char(&creq, '\n');
	text_append_str(&creq, out->payload_sha256_hex);

	out->canonical_request = text_take(&creq);
	out->signed_headers = text_take(&names);
	if (!out->canonical_request || !out->signed_headers)
		ret = -ENOMEM;
out:
	text_release(&names);
	text_release(&block);
	text_release(&creq);
	return ret;
}

static int build_string_to_sign(const struct sigv4_input *in, const char *date,
				struct sigv4_result *out)
{
	struct text sts = { 0 };
	char creq_hash[65];
	int ret;

	ret = sigv4_sha256_hex(out->canonical_request, strlen(out->canonical_request), creq_hash);
	if (ret < 0)
		return ret;
	text_append_str(&sts, SIGV4_ALGORITHM "\n");
	text_append_str(&sts, out->amz_date);
	text_append_char(&sts, '\n');
	text_append_str(&sts, date);
	text_append_char(&sts, '/');
	text_append_str(&sts, in->region);
	text_append_char(&sts, '/');
	text_append_str(&sts, in->service);
	text_append_str(&sts, "/" SIGV4_TERMINATOR "\n");
	text_append_str(&sts, creq_hash);
	out->string_to_sign = text_take(&sts);
	return out->string_to_sign ? 0 : -ENOMEM;
}

static int build_authorization(const struct sigv4_input *in, const char *date,
			       struct sigv4_result *out)
{
	struct text auth = { 0 };

	text_append_str(&auth, SIGV4_ALGORITHM " Credential=");
	text_append_str(&auth, in->access_key_id);
	text_append_char(&auth, '/');
	text_append_str(&auth, date);
	text_append_char(&auth, '/');
	text_append_str(&auth, in->region);
	text_append_char(&auth, '/');
	text_append_str(&auth, in->service);
	text_append_str(&auth, "/" SIGV4_TERMINATOR ", SignedHeaders=");
	text_append_str(&auth, out->signed_headers);
	text_append_str(&auth, ", Signature=");
	text_append_str(&auth, out->signature_hex);
	out->authorization = text_take(&auth);
	return out->authorization ? 0 : -ENOMEM;
}

int sigv4_sign(const struct sigv4_input *in, struct sigv4_result *out)
{
	unsigned char signing_key[32], signature[32];
	char date[9];
	struct tm utc;
	int ret;

	memset(out, 0, sizeof(*out));
	if (!input_is_complete(in))
		return -EINVAL;
	if (!gmtime_r(&in->when, &utc) ||
	    strftime(out->amz_date, sizeof(out->amz_date), "%Y%m%dT%H%M%SZ", &utc) != 16)
		return -EINVAL;
	memcpy(date, out->amz_date, 8);
	date[8] = '\0';

	ret = fill_payload_hash(in, out);
	if (ret < 0)
		goto out;
	ret = build_canonical_request(in, out);
	if (ret < 0)
		goto out;
	ret = build_string_to_sign(in, date, out);
	if (ret < 0)
		goto out;
	ret = derive_signing_key(in, date, signing_key);
	if (ret < 0)
		goto out;
	ret = hmac_sha256(signing_key, sizeof(signing_key), out->string_to_sign, signature);
	OPENSSL_cleanse(signing_key, sizeof(signing_key));
	if (ret < 0)
		goto out;
	bytes_to_hex(signature, sizeof(signature), out->signature_hex);
	ret = build_authorization(in, date, out);
out:
	if (ret < 0)
		sigv4_result_release(out);
	return ret;
}

void sigv4_result_release(struct sigv4_result *out)
{
	free(out->authorization);
	free(out->signed_headers);
	free(out->string_to_sign);
	free(out->canonical_request);
	memset(out, 0, sizeof(*out));
}
