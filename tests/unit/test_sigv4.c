/* SigV4 signing against the official AWS signing test suite (one cmocka
 * test per case folder, read at run time, never copied into the tree),
 * plus the Bedrock double-encoding example of our wire reference.
 *
 * The suite lives at $PROMPTFS_SIGV4_VECTORS, by default
 * SOURCE_ROOT/../shared/vectors/aws-sigv4. Without it the test exits
 * with 77 so meson reports a skip, not a pass. */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "backends/sigv4.h"

#ifndef SOURCE_ROOT
#error "build with -DSOURCE_ROOT=\"<path of the source tree>\""
#endif

#define SKIP_EXIT_CODE 77
#define MAX_VECTOR_FILE (256 * 1024)
#define MAX_REQUEST_HEADERS 64

/* Cases of the suite this runner does not sign, each with its reason.
 * A folder that has no header-signing artefacts is reported as well. */
static const struct {
	const char *name;
	const char *reason;
} unsupported_cases[] = {
	/* None today: every v4 case has a header-signing flavour. The
	 * query-* artefacts (presigned URLs) of every case are not checked,
	 * because promptfs signs with the Authorization header only. */
	{ NULL, NULL },
};

static char vectors_dir[4096];

/* DIR/NAME into OUT; a path too long for it is a broken setup. */
static void join_path(char *out, size_t cap, const char *dir, const char *name)
{
	int n = snprintf(out, cap, "%s/%s", dir, name);

	if (n < 0 || (size_t)n >= cap) {
		fprintf(stderr, "path too long: %s/%s\n", dir, name);
		exit(1);
	}
}

/* --- file helpers -------------------------------------------------- */

/* Reads PATH whole; returns a NUL-terminated heap copy (caller frees) and
 * its length in *LEN, with every "\r\n" turned into "\n" as the suite's
 * own runners do; NULL if it cannot be read. */
static char *read_file(const char *dir, const char *name, size_t *len)
{
	char path[4608];
	FILE *f;
	char *buf = NULL;
	size_t n, i, j;

	join_path(path, sizeof(path), dir, name);
	f = fopen(path, "rb");
	if (!f)
		return NULL;
	buf = malloc(MAX_VECTOR_FILE + 1);
	if (!buf)
		goto out;
	n = fread(buf, 1, MAX_VECTOR_FILE, f);
	for (i = 0, j = 0; i < n; i++) {
		if (buf[i] == '\r' && i + 1 < n && buf[i + 1] == '\n')
			continue;
		buf[j++] = buf[i];
	}
	buf[j] = '\0';
	if (len)
		*len = j;
out:
	fclose(f);
	return buf;
}

static int file_exists(const char *dir, const char *name)
{
	char path[4608];
	struct stat st;

	join_path(path, sizeof(path), dir, name);
	return stat(path, &st) == 0;
}

/* --- request.txt --------------------------------------------------- */

struct parsed_request {
	char *text; /* the file, cut in place into the fields below */
	char *method;
	char *path;
	char *query; /* NULL when the target has no '?' */
	struct sigv4_header headers[MAX_REQUEST_HEADERS];
	char *values[MAX_REQUEST_HEADERS]; /* owned: folded lines joined */
	size_t n_headers;
	const char *body;
	size_t body_len;
};

static void parsed_request_release(struct parsed_request *r)
{
	size_t i;

	for (i = 0; i < r->n_headers; i++)
		free(r->values[i]);
	free(r->text);
}

/* Appends a continuation line to the previous header's value, keeping
 * the line break: folding is the signer's job, not the parser's. */
static void append_continuation(struct parsed_request *r, const char *line)
{
	size_t i = r->n_headers - 1;
	size_t old_len = strlen(r->values[i]);
	char *grown = realloc(r->values[i], old_len + strlen(line) + 2);

	assert_non_null(grown);
	grown[old_len] = '\n';
	strcpy(grown + old_len + 1, line);
	r->values[i] = grown;
	r->headers[i].value = grown;
}

/* Request line "METHOD TARGET HTTP/1.1" (the target may hold spaces),
 * header lines with folded continuations, a blank line, the body. */
static void parse_request(const char *dir, struct parsed_request *r)
{
	size_t len = 0;
	char *line, *next, *first_space, *last_space, *question;

	memset(r, 0, sizeof(*r));
	r->text = read_file(dir, "request.txt", &len);
	assert_non_null(r->text);

	line = r->text;
	next = strchr(line, '\n');
	assert_non_null(next);
	*next = '\0';
	first_space = strchr(line, ' ');
	last_space = strrchr(line, ' ');
	assert_non_null(first_space);
	assert_true(last_space > first_space);
	*first_space = '\0';
	*last_space = '\0';
	r->method = line;
	r->path = first_space + 1;
	question = strchr(r->path, '?');
	if (question) {
		*question = '\0';
		r->query = question + 1;
	}

	r->body = r->text + len;
	line = next + 1;
	while (line < r->text + len) {
		char *colon;

		next = strchr(line, '\n');
		if (next)
			*next = '\0';
		if (*line == '\0') {
			r->body = next ? next + 1 : r->text + len;
			break;
		}
		if (*line == ' ' || *line == '\t') {
			assert_true(r->n_headers > 0);
			append_continuation(r, line);
		} else {
			colon = strchr(line, ':');
			assert_non_null(colon);
			assert_true(r->n_headers < MAX_REQUEST_HEADERS);
			*colon = '\0';
			r->values[r->n_headers] = strdup(colon + 1);
			assert_non_null(r->values[r->n_headers]);
			r->headers[r->n_headers].name = line;
			r->headers[r->n_headers].value = r->values[r->n_headers];
			r->n_headers++;
		}
		if (!next)
			break;
		line = next + 1;
	}
	r->body_len = (size_t)(r->text + len - r->body);
}

/* --- context.json -------------------------------------------------- */

static time_t parse_iso8601_utc(const char *s)
{
	struct tm tm;
	char *end;

	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	assert_non_null(end);
	assert_int_equal(*end, '\0');
	return timegm(&tm);
}

static const char *json_string_at(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* --- one vector ---------------------------------------------------- */

static void assert_file_equals(const char *dir, const char *name, const char *actual)
{
	char *expected = read_file(dir, name, NULL);

	assert_non_null(expected);
	if (strcmp(expected, actual) != 0)
		print_error("%s/%s differs\n--- expected\n%s\n--- actual\n%s\n", dir, name,
			    expected, actual);
	assert_string_equal(expected, actual);
	free(expected);
}

static void assert_authorization_line(const char *dir, const char *actual)
{
	char *signed_request = read_file(dir, "header-signed-request.txt", NULL);
	char *line, *end;

	if (!signed_request)
		return;
	line = strstr(signed_request, "\nAuthorization:");
	assert_non_null(line);
	line += strlen("\nAuthorization:");
	end = strchr(line, '\n');
	if (end)
		*end = '\0';
	assert_string_equal(line, actual);
	free(signed_request);
}

static void test_vector(void **state)
{
	const char *dir = *state;
	struct parsed_request req;
	struct sigv4_input in;
	struct sigv4_result res;
	json_error_t jerr;
	json_t *ctx, *creds;
	char context_path[4608];

	parse_request(dir, &req);
	join_path(context_path, sizeof(context_path), dir, "context.json");
	ctx = json_load_file(context_path, 0, &jerr);
	assert_non_null(ctx);
	creds = json_object_get(ctx, "credentials");
	assert_true(json_is_object(creds));

	memset(&in, 0, sizeof(in));
	in.method = req.method;
	in.path = req.path;
	in.query = req.query;
	in.headers = req.headers;
	in.n_headers = req.n_headers;
	in.payload = req.body;
	in.payload_len = req.body_len;
	in.region = json_string_at(ctx, "region");
	in.service = json_string_at(ctx, "service");
	in.access_key_id = json_string_at(creds, "access_key_id");
	in.secret_access_key = json_string_at(creds, "secret_access_key");
	in.session_token = json_string_at(creds, "token");
	in.when = parse_iso8601_utc(json_string_at(ctx, "timestamp"));
	in.normalize_path = json_is_true(json_object_get(ctx, "normalize"));
	in.sign_content_sha256 = json_is_true(json_object_get(ctx, "sign_body"));
	in.session_token_unsigned = json_is_true(json_object_get(ctx, "omit_session_token"));

	assert_int_equal(sigv4_sign(&in, &res), 0);
	assert_file_equals(dir, "header-canonical-request.txt", res.canonical_request);
	assert_file_equals(dir, "header-string-to-sign.txt", res.string_to_sign);
	assert_file_equals(dir, "header-signature.txt", res.signature_hex);
	assert_authorization_line(dir, res.authorization);

	sigv4_result_release(&res);
	json_decref(ctx);
	parsed_request_release(&req);
}

/* --- Bedrock worked example (reference §6.3) ----------------------- */

#define BEDROCK_BODY                                                              \
	"{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"Hello\"}]}]," \
	"\"inferenceConfig\":{\"maxTokens\":64,\"temperature\":0.5}}"

static void sign_bedrock_example(const char *token, struct sigv4_result *res)
{
	static const struct sigv4_header headers[] = {
		{ "Content-Type", "application/json" },
		{ "Host", "bedrock-runtime.us-east-1.amazonaws.com" },
	};
	struct sigv4_input in;

	memset(&in, 0, sizeof(in));
	in.method = "POST";
	in.path = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse";
	in.headers = headers;
	in.n_headers = 2;
	in.payload = BEDROCK_BODY;
	in.payload_len = strlen(BEDROCK_BODY);
	in.region = "us-east-1";
	in.service = "bedrock";
	in.access_key_id = "AKIDEXAMPLE";
	in.secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
	in.session_token = token;
	in.when = 1440938160; /* 2015-08-30T12:36:00Z */
	in.normalize_path = 1;
	assert_int_equal(sigv4_sign(&in, res), 0);
}

static void test_bedrock_double_encoding(void **state)
{
	struct sigv4_result res;

	(void)state;
	sign_bedrock_example(NULL, &res);
	assert_string_equal(res.payload_sha256_hex,
			    "14a35e749e415670a238cb250221feb9de6a53cc2d195d31dea5be1e5e843750");
	assert_string_equal(res.canonical_request,
			    "POST\n"
			    "/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse\n"
			    "\n"
			    "content-type:application/json\n"
			    "host:bedrock-runtime.us-east-1.amazonaws.com\n"
			    "x-amz-date:20150830T123600Z\n"
			    "\n"
			    "content-type;host;x-amz-date\n"
			    "14a35e749e415670a238cb250221feb9de6a53cc2d195d31dea5be1e5e843750");
	assert_string_equal(res.string_to_sign,
			    "AWS4-HMAC-SHA256\n20150830T123600Z\n"
			    "20150830/us-east-1/bedrock/aws4_request\n"
			    "af409bbc1ddb8c55320f25431375247017face1d65268ef84e2551d2546c4ef2");
	assert_string_equal(res.signature_hex,
			    "9e49235b233d7416c24e7b270bcc1e16e0233ecd29a7a5308f4271e74718c869");
	assert_string_equal(
		res.authorization,
		"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/"
		"bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, "
		"Signature=9e49235b233d7416c24e7b270bcc1e16e0233ecd29a7a5308f4271e74718c869");
	assert_string_equal(res.amz_date, "20150830T123600Z");
	sigv4_result_release(&res);
}

static void test_bedrock_session_token(void **state)
{
	struct sigv4_result res;

	(void)state;
	sign_bedrock_example("EXAMPLESESSIONTOKEN", &res);
	assert_string_equal(res.signed_headers,
			    "content-type;host;x-amz-date;x-amz-security-token");
	assert_non_null(strstr(res.string_to_sign,
			       "0d8d5ed5fddd37d39084a544c36bc97112e87536ad30a3b350545651999ed46a"));
	assert_string_equal(res.signature_hex,
			    "7e583c0539aa59020a5fa523b673f058433c99703bf00a8554c10ef3728389a9");
	sigv4_result_release(&res);
}

/* Headers this module adds itself must not also come from the caller:
 * two X-Amz-Date values would sign something never sent. */
static void test_owned_header_rejected(void **state)
{
	static const struct sigv4_header headers[] = {
		{ "Host", "example.amazonaws.com" },
		{ "X-Amz-Date", "20150830T123600Z" },
	};
	struct sigv4_input in;
	struct sigv4_result res;

	(void)state;
	memset(&in, 0, sizeof(in));
	in.method = "GET";
	in.path = "/";
	in.headers = headers;
	in.n_headers = 2;
	in.region = "us-east-1";
	in.service = "service";
	in.access_key_id = "AKIDEXAMPLE";
	in.secret_access_key = "secret";
	assert_int_equal(sigv4_sign(&in, &res), -EINVAL);
	in.n_headers = 0;
	assert_int_equal(sigv4_sign(&in, &res), -EINVAL); /* no Host */
}

static void test_uri_encode(void **state)
{
	char *out = NULL;

	(void)state;
	assert_int_equal(sigv4_uri_encode("a:b/c d~", 8, 0, &out), 0);
	assert_string_equal(out, "a%3Ab%2Fc%20d~");
	free(out);
	assert_int_equal(sigv4_uri_encode("/x/\xe1\x88\xb4", 6, 1, &out), 0);
	assert_string_equal(out, "/x/%E1%88%B4");
	free(out);
}

/* --- discovery ----------------------------------------------------- */

static const char *unsupported_reason(const char *name)
{
	size_t i;

	for (i = 0; unsupported_cases[i].name; i++)
		if (strcmp(unsupported_cases[i].name, name) == 0)
			return unsupported_cases[i].reason;
	return NULL;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void locate_vectors(void)
{
	const char *env = getenv("PROMPTFS_SIGV4_VECTORS");
	int n;

	if (!env || !*env) {
		join_path(vectors_dir, sizeof(vectors_dir), SOURCE_ROOT,
			  "../shared/vectors/aws-sigv4");
		return;
	}
	n = snprintf(vectors_dir, sizeof(vectors_dir), "%s", env);
	if (n < 0 || (size_t)n >= sizeof(vectors_dir)) {
		fprintf(stderr, "PROMPTFS_SIGV4_VECTORS is too long\n");
		exit(1);
	}
}

/* Collects the sorted case folders; *N_OUT of them, caller frees each
 * and the array. */
static char **list_cases(size_t *n_out)
{
	DIR *dir = opendir(vectors_dir);
	struct dirent *entry;
	char **names = NULL;
	size_t n = 0;

	*n_out = 0;
	if (!dir)
		return NULL;
	for (entry = readdir(dir); entry; entry = readdir(dir)) {
		char case_dir[4608];
		char **grown;

		if (entry->d_name[0] == '.')
			continue;
		join_path(case_dir, sizeof(case_dir), vectors_dir, entry->d_name);
		if (!file_exists(case_dir, "request.txt"))
			continue; /* README, LICENSE */
		grown = realloc(names, (n + 1) * sizeof(*names));
		if (!grown)
			break;
		names = grown;
		names[n] = strdup(case_dir);
		if (!names[n])
			break;
		n++;
	}
	closedir(dir);
	if (names)
		qsort(names, n, sizeof(*names), compare_names);
	*n_out = n;
	return names;
}

int main(void)
{
	static const struct CMUnitTest fixed_tests[] = {
		cmocka_unit_test(test_bedrock_double_encoding),
		cmocka_unit_test(test_bedrock_session_token),
		cmocka_unit_test(test_owned_header_rejected),
		cmocka_unit_test(test_uri_encode),
	};
	struct CMUnitTest *tests = NULL;
	char **cases;
	size_t n_cases, n_tests = 0, n_excluded = 0, i;
	struct stat st;
	int failures;

	/* The fixed cases need no vectors, so they run (and may fail) even
	 * where the suite is missing. */
	failures = cmocka_run_group_tests_name("sigv4_fixed", fixed_tests, NULL, NULL);
	locate_vectors();
	if (stat(vectors_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		printf("SigV4 vectors not found at %s; skipped\n", vectors_dir);
		return failures ? 1 : SKIP_EXIT_CODE;
	}

	cases = list_cases(&n_cases);
	if (n_cases == 0) {
		printf("no SigV4 cases under %s\n", vectors_dir);
		return 1;
	}
	tests = calloc(n_cases, sizeof(*tests));
	assert_non_null(tests);
	for (i = 0; i < n_cases; i++) {
		const char *name = strrchr(cases[i], '/') + 1;
		const char *reason = unsupported_reason(name);

		if (!reason && !file_exists(cases[i], "header-canonical-request.txt"))
			reason = "no header-signing artefacts (query presigning only)";
		if (reason) {
			printf("[ EXCLUDED ] %s: %s\n", name, reason);
			n_excluded++;
			continue;
		}
		tests[n_tests].name = name;
		tests[n_tests].test_func = test_vector;
		tests[n_tests].initial_state = cases[i];
		n_tests++;
	}
	printf("SigV4 vectors at %s: %zu run, %zu excluded; query-string "
	       "(presigned) artefacts not checked in any case\n",
	       vectors_dir, n_tests, n_excluded);
	failures += _cmocka_run_group_tests("sigv4_vectors", tests, n_tests, NULL, NULL);

	for (i = 0; i < n_cases; i++)
		free(cases[i]);
	free(cases);
	free(tests);
	return failures ? 1 : 0;
}
