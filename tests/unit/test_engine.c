/* Unit tests of the engine (backends/engine.c, engine_attempt.c): plans
 * with ordered candidates, retries, failover, the outcome table, the
 * deployment's token cap, time to first byte, cancellation and the
 * first-token timeout, against a tiny HTTP/1.1 server that runs in a
 * thread of this test.
 *
 * The server answers by the first component of the request path, which
 * is the candidate's endpoint (http://127.0.0.1:PORT/<behaviour>, the
 * openai backend appends /chat/completions):
 *
 *   /ok/        200, an OpenAI SSE stream "hi", finish_reason stop
 *   /busy/      503, Retry-After: 0
 *   /busy2/     503 with Retry-After: 0 to its first two requests, then as /ok/
 *   /busylong/  503, Retry-After: 30 (longer than the attempt may take)
 *   /busy3/     503, Retry-After: 3
 *   /bad/       400
 *   /filter/    200, a stream "partial" whose finish_reason is content_filter
 *   /silent/    reads the request, never answers, waits for the client to leave
 *   /rl/        429 with Retry-After: 1 to its first request, then as /ok/
 *   /rl0/       429 with Retry-After: 0, always
 *   /switch/    503 with Retry-After: 0 while the test says it is down, else as /ok/
 *   /toolong/   400, "This model's maximum context length is ..."
 *
 * It records each request's path and body. Every wait is on a condition
 * variable, never a sleep. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <jansson.h>

#include "backends/engine.h"
#include "backends/metrics.h"

/* How long any wait of this test may take before it counts as a hang. */
#define WAIT_LIMIT_S 8.0

static void cond_init_monotonic(pthread_cond_t *cond)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(cond, &attr);
	pthread_condattr_destroy(&attr);
}

static struct timespec deadline_in(double seconds)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)seconds;
	ts.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Lets at least SECONDS pass: a lower bound only, never a guess at how
 * long something takes. */
static void pass_time(double seconds)
{
	double end = now_s() + seconds;

	while (now_s() < end) {
		struct timespec ts = { .tv_sec = 0, .tv_nsec = 20 * 1000 * 1000 };

		nanosleep(&ts, NULL);
	}
}

/* ---- the HTTP server ------------------------------------------------------- */

#define MAX_CONNS 64
#define MAX_SEEN 64
#define REQUEST_CAP (64 * 1024)

struct seen_request {
	char path[128];
	char *body;
};

struct server {
	int listen_fd;
	int stop_pipe[2]; /* readable once the server stops */
	int port;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct seen_request seen[MAX_SEEN]; /* under lock */
	size_t n_seen;			    /* under lock */
	unsigned busy2_count;		    /* under lock */
	unsigned rl_count;		    /* under lock */
	int switch_down;		    /* under lock */
	pthread_t conns[MAX_CONNS];	    /* accept thread only */
	size_t n_conns;
};

struct conn {
	struct server *srv;
	int fd;
};

static const char ok_stream[] =
	"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{\"content\":\"hi\"},"
	"\"finish_reason\":\"stop\"}]}\n\n"
	"data: [DONE]\n\n";

static const char filter_stream[] = "data: {\"choices\":[{\"delta\":{\"content\":\"partial\"},"
				    "\"finish_reason\":\"content_filter\"}]}\n\n"
				    "data: [DONE]\n\n";

static const char error_503[] =
	"{\"error\":{\"message\":\"The server is overloaded\",\"type\":\"server_error\"}}";

static const char error_429[] =
	"{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\"}}";

static const char error_context[] =
	"{\"error\":{\"message\":\"This model's maximum context length is 128000 tokens. "
	"However, your messages resulted in 130000 tokens.\",\"type\":\"invalid_request_error\","
	"\"code\":\"context_length_exceeded\"}}";

static const char error_400[] = "{\"error\":{\"message\":\"Invalid value for temperature\","
				"\"type\":\"invalid_request_error\"}}";

/* Waits until FD is readable; 0 when it is, -1 when the server stops. */
static int wait_readable(struct server *srv, int fd)
{
	struct pollfd fds[2] = {
		{ .fd = fd, .events = POLLIN },
		{ .fd = srv->stop_pipe[0], .events = POLLIN },
	};

	for (;;) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (fds[1].revents)
			return -1;
		if (fds[0].revents)
			return 0;
	}
}

static void send_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		data += n;
		len -= (size_t)n;
	}
}

static void respond(int fd, int status, const char *extra_headers, const char *content_type,
		    const char *body)
{
	char head[512];
	int n;

	n = snprintf(head, sizeof(head),
		     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
		     "Connection: close\r\n\r\n",
		     status,
		     status == 200   ? "OK"
		     : status == 400 ? "Bad Request"
		     : status == 429 ? "Too Many Requests"
		     : status == 503 ? "Service Unavailable"
				     : "Not Found",
		     content_type, strlen(body), extra_headers);
	send_all(fd, head, (size_t)n);
	send_all(fd, body, strlen(body));
}

/* Holds the connection open, saying nothing, until the client leaves
 * or the server stops. */
static void hold_silent(struct server *srv, int fd)
{
	char byte;

	while (wait_readable(srv, fd) == 0) {
		ssize_t n = recv(fd, &byte, 1, 0);

		if (n == 0 || (n < 0 && errno != EINTR))
			return;
	}
}

/* Reads one request; fills PATH and returns its body (malloc'd), or
 * NULL when the client left or the request does not parse. */
static char *read_request(struct server *srv, int fd, char path[128])
{
	char *buf = malloc(REQUEST_CAP + 1);
	size_t len = 0, head_len, body_len = 0;
	char *end = NULL, *line, *body;
	ssize_t n;

	if (!buf)
		return NULL;
	while (!end) {
		if (len == REQUEST_CAP || wait_readable(srv, fd) < 0)
			goto fail;
		n = recv(fd, buf + len, REQUEST_CAP - len, 0);
		if (n <= 0)
			goto fail;
		len += (size_t)n;
		buf[len] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	head_len = (size_t)(end - buf) + 4;
	if (sscanf(buf, "POST %127s HTTP/1.1", path) != 1)
		goto fail;
	for (line = strstr(buf, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n")) {
		if (strncasecmp(line + 2, "Content-Length:", 15) == 0)
			body_len = strtoul(line + 2 + 15, NULL, 10);
	}
	if (head_len + body_len > REQUEST_CAP)
		goto fail;
	while (len < head_len + body_len) {
		if (wait_readable(srv, fd) < 0)
			goto fail;
		n = recv(fd, buf + len, head_len + body_len - len, 0);
		if (n <= 0)
			goto fail;
		len += (size_t)n;
	}
	body = strndup(buf + head_len, body_len);
	free(buf);
	return body;
fail:
	free(buf);
	return NULL;
}

static int path_is(const char *path, const char *behaviour)
{
	size_t len = strlen(behaviour);

	return strncmp(path, behaviour, len) == 0 && path[len] == '/';
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct server *srv = c->srv;
	char path[128];
	char *body;
	int busy2_fails = 0;
	int rl_fails = 0;
	int switch_down = 0;

	body = read_request(srv, c->fd, path);
	if (!body)
		goto out;
	pthread_mutex_lock(&srv->lock);
	if (srv->n_seen < MAX_SEEN) {
		snprintf(srv->seen[srv->n_seen].path, sizeof(srv->seen[0].path), "%s", path);
		srv->seen[srv->n_seen].body = body;
		srv->n_seen++;
		body = NULL;
	}
	if (path_is(path, "/busy2"))
		busy2_fails = srv->busy2_count++ < 2;
	if (path_is(path, "/rl"))
		rl_fails = srv->rl_count++ < 1;
	switch_down = srv->switch_down;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
	free(body);

	if (path_is(path, "/ok") || (path_is(path, "/busy2") && !busy2_fails) ||
	    (path_is(path, "/rl") && !rl_fails) || (path_is(path, "/switch") && !switch_down))
		respond(c->fd, 200, "x-request-id: req_ok\r\n", "text/event-stream", ok_stream);
	else if (path_is(path, "/rl"))
		respond(c->fd, 429, "Retry-After: 1\r\n", "application/json", error_429);
	else if (path_is(path, "/rl0"))
		respond(c->fd, 429, "Retry-After: 0\r\n", "application/json", error_429);
	else if (path_is(path, "/switch"))
		respond(c->fd, 503, "Retry-After: 0\r\n", "application/json", error_503);
	else if (path_is(path, "/toolong"))
		respond(c->fd, 400, "", "application/json", error_context);
	else if (path_is(path, "/busy") || path_is(path, "/busy2"))
		respond(c->fd, 503, "Retry-After: 0\r\n", "application/json", error_503);
	else if (path_is(path, "/busylong"))
		respond(c->fd, 503, "Retry-After: 30\r\n", "application/json", error_503);
	else if (path_is(path, "/busy3"))
		respond(c->fd, 503, "Retry-After: 3\r\n", "application/json", error_503);
	else if (path_is(path, "/bad"))
		respond(c->fd, 400, "", "application/json", error_400);
	else if (path_is(path, "/filter"))
		respond(c->fd, 200, "", "text/event-stream", filter_stream);
	else if (path_is(path, "/silent"))
		hold_silent(srv, c->fd);
	else
		respond(c->fd, 404, "", "application/json", "{\"error\":{\"message\":\"no\"}}");
	/* let the client see the end before the socket goes */
	shutdown(c->fd, SHUT_WR);
	hold_silent(srv, c->fd);
out:
	close(c->fd);
	free(c);
	return NULL;
}

static void *accept_main(void *arg)
{
	struct server *srv = arg;

	while (wait_readable(srv, srv->listen_fd) == 0) {
		int fd = accept(srv->listen_fd, NULL, NULL);
		struct conn *c;

		if (fd < 0)
			continue;
		c = malloc(sizeof(*c));
		if (!c || srv->n_conns == MAX_CONNS) {
			free(c);
			close(fd);
			continue;
		}
		c->srv = srv;
		c->fd = fd;
		if (pthread_create(&srv->conns[srv->n_conns], NULL, conn_main, c) != 0) {
			free(c);
			close(fd);
			continue;
		}
		srv->n_conns++;
	}
	return NULL;
}

static void server_start(struct server *srv)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	socklen_t addr_len = sizeof(addr);

	memset(srv, 0, sizeof(*srv));
	pthread_mutex_init(&srv->lock, NULL);
	cond_init_monotonic(&srv->cond);
	assert_int_equal(pipe(srv->stop_pipe), 0);
	srv->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(srv->listen_fd >= 0);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(srv->listen_fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(srv->listen_fd, 64), 0);
	assert_int_equal(getsockname(srv->listen_fd, (struct sockaddr *)&addr, &addr_len), 0);
	srv->port = ntohs(addr.sin_port);
	assert_int_equal(pthread_create(&srv->thread, NULL, accept_main, srv), 0);
}

static void server_stop(struct server *srv)
{
	assert_int_equal(write(srv->stop_pipe[1], "x", 1), 1);
	pthread_join(srv->thread, NULL);
	for (size_t i = 0; i < srv->n_conns; i++)
		pthread_join(srv->conns[i], NULL);
	for (size_t i = 0; i < srv->n_seen; i++)
		free(srv->seen[i].body);
	close(srv->listen_fd);
	close(srv->stop_pipe[0]);
	close(srv->stop_pipe[1]);
	pthread_cond_destroy(&srv->cond);
	pthread_mutex_destroy(&srv->lock);
}

/* Waits until the server has seen N requests. */
static void server_wait_requests(struct server *srv, size_t n)
{
	struct timespec deadline = deadline_in(WAIT_LIMIT_S);
	int rc = 0;

	pthread_mutex_lock(&srv->lock);
	while (srv->n_seen < n && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&srv->cond, &srv->lock, &deadline);
	pthread_mutex_unlock(&srv->lock);
	assert_true(srv->n_seen >= n);
}

static size_t server_requests(struct server *srv)
{
	size_t n;

	pthread_mutex_lock(&srv->lock);
	n = srv->n_seen;
	pthread_mutex_unlock(&srv->lock);
	return n;
}

/* The max_tokens of request I's body; -1 when it has none. */
static long server_max_tokens(struct server *srv, size_t i)
{
	json_error_t jerr;
	json_t *root, *value;
	long result = -1;

	assert_true(i < server_requests(srv));
	root = json_loads(srv->seen[i].body, 0, &jerr);
	assert_non_null(root);
	value = json_object_get(root, "max_tokens");
	if (json_is_integer(value))
		result = (long)json_integer_value(value);
	json_decref(root);
	return result;
}

/* ---- the recording sink ---------------------------------------------------- */

#define MAX_ATTEMPTS 16

struct recorder {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	const struct model *started[MAX_ATTEMPTS];
	double started_at[MAX_ATTEMPTS]; /* monotonic seconds */
	double ended_at[MAX_ATTEMPTS];
	struct engine_attempt_report ended[MAX_ATTEMPTS];
	size_t n_started, n_ended;
	int in_attempt;
	int protocol_errors; /* calls out of order: see check_protocol */
	char text[256];
	size_t text_len;
	int discarded;
	enum finish_reason finish;
	int n_finish;
	int done_calls;
	int status;
	char message[600];
	const struct model *skipped[MAX_ATTEMPTS]; /* passed over without an attempt */
	char skip_reason[MAX_ATTEMPTS][160];
	size_t n_skipped;
};

static void recorder_init(struct recorder *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	cond_init_monotonic(&r->cond);
}

static void recorder_destroy(struct recorder *r)
{
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->lock);
}

/* Every call but done() comes before done(); text, finish and usage only
 * inside an attempt; attempts start and end in pairs. Under lock. */
static void check_protocol(struct recorder *r, int needs_attempt)
{
	if (r->done_calls > 0 || (needs_attempt && !r->in_attempt))
		r->protocol_errors++;
}

static void rec_attempt_started(void *ctx, const struct model *model)
{
	struct recorder *r = ctx;

	pthread_mutex_lock(&r->lock);
	check_protocol(r, 0);
	if (r->in_attempt || r->n_started == MAX_ATTEMPTS)
		r->protocol_errors++;
	else {
		r->started_at[r->n_started] = now_s();
		r->started[r->n_started++] = model;
	}
	r->in_attempt = 1;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

static int rec_text(void *ctx, const char *bytes, size_t len)
{
	struct recorder *r = ctx;

	pthread_mutex_lock(&r->lock);
	check_protocol(r, 1);
	if (r->text_len + len < sizeof(r->text)) {
		memcpy(r->text + r->text_len, bytes, len);
		r->text_len += len;
		r->text[r->text_len] = '\0';
	}
	pthread_mutex_unlock(&r->lock);
	return 0;
}

static void rec_attempt_discarded(void *ctx)
{
	struct recorder *r = ctx;

	pthread_mutex_lock(&r->lock);
	check_protocol(r, 0);
	r->discarded++;
	r->text_len = 0;
	r->text[0] = '\0';
	pthread_mutex_unlock(&r->lock);
}

static void rec_usage(void *ctx, long input_tokens, long output_tokens)
{
	struct recorder *r = ctx;

	(void)input_tokens;
	(void)output_tokens;
	pthread_mutex_lock(&r->lock);
	check_protocol(r, 1);
	pthread_mutex_unlock(&r->lock);
}

static void rec_finish_reason(void *ctx, enum finish_reason reason, const char *provider_word)
{
	struct recorder *r = ctx;

	(void)provider_word;
	pthread_mutex_lock(&r->lock);
	check_protocol(r, 1);
	r->finish = reason;
	r->n_finish++;
	pthread_mutex_unlock(&r->lock);
}

static void rec_request_id(void *ctx, const char *id)
{
	struct recorder *r = ctx;

	(void)id;
	pthread_mutex_lock(&r->lock);
	check_protocol(r, 0);
	pthread_mutex_unlock(&r->lock);
}

static void rec_attempt_ended(void *ctx, const struct engine_attempt_report *report)
{
	struct recorder *r = ctx;

	pthread_mutex_lock(&r->lock);
	check_protocol(r, 1);
	if (r->n_ended >= r->n_started || report->model != r->started[r->n_ended])
		r->protocol_errors++;
	else {
		r->ended_at[r->n_ended] = now_s();
		r->ended[r->n_ended++] = *report;
	}
	r->in_attempt = 0;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

static void rec_skipped(void *ctx, const struct model *model, const char *reason)
{
	struct recorder *r = ctx;

	pthread_mutex_lock(&r->lock);
	check_protocol(r, 0);
	if (r->in_attempt || r->n_skipped == MAX_ATTEMPTS)
		r->protocol_errors++;
	else {
		snprintf(r->skip_reason[r->n_skipped], sizeof(r->skip_reason[0]), "%s", reason);
		r->skipped[r->n_skipped++] = model;
	}
	pthread_mutex_unlock(&r->lock);
}

static void rec_done(void *ctx, int status, const char *message)
{
	struct recorder *r = ctx;

	pthread_mutex_lock(&r->lock);
	if (r->in_attempt)
		r->protocol_errors++; /* an attempt that never ended */
	r->done_calls++;
	r->status = status;
	snprintf(r->message, sizeof(r->message), "%s", message ? message : "");
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

static const struct engine_sink recording_sink = {
	.attempt_started = rec_attempt_started,
	.text = rec_text,
	.attempt_discarded = rec_attempt_discarded,
	.usage = rec_usage,
	.finish_reason = rec_finish_reason,
	.request_id = rec_request_id,
	.attempt_ended = rec_attempt_ended,
	.skipped = rec_skipped,
	.done = rec_done,
};

/* Waits for the job's done(); returns its status. */
static int recorder_wait_done(struct recorder *r)
{
	struct timespec deadline = deadline_in(WAIT_LIMIT_S);
	int rc = 0;

	pthread_mutex_lock(&r->lock);
	while (r->done_calls == 0 && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&r->cond, &r->lock, &deadline);
	pthread_mutex_unlock(&r->lock);
	assert_int_equal(r->done_calls, 1);
	assert_int_equal(r->protocol_errors, 0);
	assert_int_equal(r->n_started, r->n_ended);
	return r->status;
}

/* Waits until N attempts have ended. */
static void recorder_wait_ended(struct recorder *r, size_t n)
{
	struct timespec deadline = deadline_in(WAIT_LIMIT_S);
	int rc = 0;

	pthread_mutex_lock(&r->lock);
	while (r->n_ended < n && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&r->cond, &r->lock, &deadline);
	pthread_mutex_unlock(&r->lock);
	assert_true(r->n_ended >= n);
}

/* ---- deployments, engine, plans -------------------------------------------- */

#define MAX_DEPLOYMENTS 4

struct deployment {
	struct region region;
	struct model model;
	char endpoint[64];
};

struct fixture {
	struct server srv;
	struct engine *engine;
	struct cloud cloud;
	struct deployment dep[MAX_DEPLOYMENTS];
	/* the jobs' sinks live here, not on a test's stack: should an
	 * assertion leave a test early, engine_free still reports to them */
	struct recorder rec[4];
};

static int setup(void **state)
{
	struct engine_options opts = {
		.max_inflight = 4,
		.connect_timeout_s = 2,
		.cafile = NULL,
		.max_answer_bytes = 1 << 20,
		.max_body_bytes = 4 << 20,
	};
	struct fixture *f = calloc(1, sizeof(*f));
	int err = 0;

	assert_non_null(f);
	server_start(&f->srv);
	f->cloud.name = "local";
	f->cloud.provider = PROVIDER_OPENAI; /* no credentials: no Authorization */
	for (size_t i = 0; i < sizeof(f->rec) / sizeof(f->rec[0]); i++)
		recorder_init(&f->rec[i]);
	f->engine = engine_new(&opts, &err);
	assert_non_null(f->engine);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	engine_free(f->engine);
	metrics_free(); /* after the engine: it counts until it stops */
	server_stop(&f->srv);
	for (size_t i = 0; i < sizeof(f->rec) / sizeof(f->rec[0]); i++)
		recorder_destroy(&f->rec[i]);
	free(f);
	return 0;
}

/* Deployment I of F, served by BEHAVIOUR (a path of the server), with
 * the answer's token cap CAP (0: none). */
static const struct model *deployment(struct fixture *f, size_t i, const char *behaviour, long cap)
{
	struct deployment *d = &f->dep[i];

	assert_true(i < MAX_DEPLOYMENTS);
	snprintf(d->endpoint, sizeof(d->endpoint), "http://127.0.0.1:%d/%s", f->srv.port,
		 behaviour);
	d->region.name = "localhost";
	d->region.endpoint = d->endpoint;
	d->region.cloud = &f->cloud;
	d->model.name = (char *)behaviour;
	d->model.id = "test-model";
	d->model.max_output_tokens = cap;
	d->model.region = &d->region;
	return &d->model;
}

struct plan_spec {
	const struct model *candidates[MAX_DEPLOYMENTS];
	int retries;
	long max_tokens;
	double timeout_s; /* 0: 5 s */
	double first_token_timeout_s;
};

static struct engine_job *submit(struct fixture *f, struct recorder *r,
				 const struct plan_spec *spec)
{
	struct engine_plan plan = {
		.retries = spec->retries,
		.timeout_s = spec->timeout_s > 0 ? spec->timeout_s : 5.0,
		.first_token_timeout_s = spec->first_token_timeout_s,
		.sink = &recording_sink,
		.sink_ctx = r,
	};
	struct engine_job *job;

	plan.request.messages = calloc(1, sizeof(*plan.request.messages));
	assert_non_null(plan.request.messages);
	plan.request.n_messages = 1;
	plan.request.messages[0].role = strdup("user");
	plan.request.messages[0].content = strdup("hello");
	assert_non_null(plan.request.messages[0].role);
	assert_non_null(plan.request.messages[0].content);
	plan.request.max_tokens = spec->max_tokens;
	for (size_t i = 0; i < MAX_DEPLOYMENTS && spec->candidates[i]; i++)
		plan.candidates[plan.n_candidates++] = spec->candidates[i];
	job = engine_submit(f->engine, &plan);
	assert_non_null(job);
	/* the request moved into the job */
	assert_null(plan.request.messages);
	return job;
}

static void assert_seen_path(struct server *srv, size_t i, const char *behaviour)
{
	char expected[160];

	snprintf(expected, sizeof(expected), "/%s/chat/completions", behaviour);
	assert_true(i < server_requests(srv));
	assert_string_equal(srv->seen[i].path, expected);
}

/* ---- the tests ------------------------------------------------------------- */

/* An answer: one attempt, OK, its text and finish reason, and its time
 * to first byte. */
static void test_answer_and_ttfb(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *ok = deployment(f, 0, "ok", 0);

	submit(f, r, &(struct plan_spec){ .candidates = { ok }, .retries = 1 });
	assert_int_equal(recorder_wait_done(r), 0);
	assert_int_equal(r->n_started, 1);
	assert_ptr_equal(r->started[0], ok);
	assert_int_equal(r->ended[0].outcome, OUTCOME_OK);
	assert_ptr_equal(r->ended[0].model, ok);
	assert_int_equal(r->ended[0].http_status, 200);
	assert_string_equal(r->text, "hi");
	assert_int_equal(r->finish, FINISH_STOP);
	assert_int_equal(r->discarded, 0);
	/* (f) the first byte came, and not after the attempt ended */
	assert_true(r->ended[0].ttfb_ms >= 0);
	assert_true(r->ended[0].ttfb_ms <= r->ended[0].elapsed_ms);
	assert_int_equal(server_requests(&f->srv), 1);
	assert_seen_path(&f->srv, 0, "ok");
}

/* (a) One candidate, always 503 with Retry-After: 0, retries=1: two
 * attempts on it, then the job fails. */
static void test_retries_spent_on_one_candidate(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *busy = deployment(f, 0, "busy", 0);

	submit(f, r, &(struct plan_spec){ .candidates = { busy }, .retries = 1 });
	assert_int_equal(recorder_wait_done(r), -EIO);
	assert_int_equal(r->n_started, 2);
	for (size_t i = 0; i < 2; i++) {
		assert_ptr_equal(r->started[i], busy);
		assert_ptr_equal(r->ended[i].model, busy);
		assert_int_equal(r->ended[i].outcome, OUTCOME_HTTP_RETRYABLE);
		assert_int_equal(r->ended[i].http_status, 503);
	}
	assert_non_null(strstr(r->message, "503"));
	assert_int_equal(server_requests(&f->srv), 2);
}

/* 503 twice, then an answer, within retries=2 on one candidate. */
static void test_retry_then_answer(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *flaky = deployment(f, 0, "busy2", 0);

	submit(f, r, &(struct plan_spec){ .candidates = { flaky }, .retries = 2 });
	assert_int_equal(recorder_wait_done(r), 0);
	assert_int_equal(r->n_started, 3);
	assert_int_equal(r->ended[0].outcome, OUTCOME_HTTP_RETRYABLE);
	assert_int_equal(r->ended[1].outcome, OUTCOME_HTTP_RETRYABLE);
	assert_int_equal(r->ended[2].outcome, OUTCOME_OK);
	assert_string_equal(r->text, "hi");
	assert_int_equal(r->discarded, 0); /* the 503s streamed nothing */
}

/* (b) Two candidates, the first always 503, retries=1: 503, 503 on the
 * first, then the answer of the second. */
static void test_failover_after_retries(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *busy = deployment(f, 0, "busy", 0);
	const struct model *ok = deployment(f, 1, "ok", 0);

	submit(f, r, &(struct plan_spec){ .candidates = { busy, ok }, .retries = 1 });
	assert_int_equal(recorder_wait_done(r), 0);
	assert_int_equal(r->n_started, 3);
	assert_ptr_equal(r->started[0], busy);
	assert_ptr_equal(r->started[1], busy);
	assert_ptr_equal(r->started[2], ok);
	assert_int_equal(r->ended[0].outcome, OUTCOME_HTTP_RETRYABLE);
	assert_int_equal(r->ended[0].http_status, 503);
	assert_int_equal(r->ended[1].outcome, OUTCOME_HTTP_RETRYABLE);
	assert_int_equal(r->ended[1].http_status, 503);
	assert_int_equal(r->ended[2].outcome, OUTCOME_OK);
	assert_ptr_equal(r->ended[2].model, ok);
	assert_string_equal(r->text, "hi");
	assert_int_equal(server_requests(&f->srv), 3);
	assert_seen_path(&f->srv, 0, "busy");
	assert_seen_path(&f->srv, 1, "busy");
	assert_seen_path(&f->srv, 2, "ok");
}

/* What the engine counts for /.metrics (backends/metrics.c) in (b):
 * each attempt's outcome and duration on its deployment, the second
 * attempt on the first candidate a retry there, the third a failover
 * from it; once the job ended, nothing is queued or in flight. */
static void test_metrics_of_retries_and_failover(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *busy = deployment(f, 0, "busy", 0);
	const struct model *ok = deployment(f, 1, "ok", 0);
	const struct model *models[] = { busy, ok };
	const struct metrics_deployment_view *b, *o;
	struct metrics_snapshot s;

	assert_int_equal(metrics_init_models(models, 2), 0);
	submit(f, r, &(struct plan_spec){ .candidates = { busy, ok }, .retries = 1 });
	assert_int_equal(recorder_wait_done(r), 0);
	assert_int_equal(metrics_snapshot_take(&s), 0);
	assert_int_equal(s.n_deployments, 2);
	b = &s.deployments[0];
	o = &s.deployments[1];
	assert_ptr_equal(b->model, busy);
	assert_int_equal(b->n_outcomes, 2);
	assert_string_equal(b->outcomes[0].word, "ok");
	assert_int_equal(b->outcomes[0].count, 0);
	assert_string_equal(b->outcomes[1].word, "http_503");
	assert_int_equal(b->outcomes[1].count, 2);
	assert_int_equal(b->retries, 1);
	assert_int_equal(b->failovers, 1);
	assert_int_equal(b->duration.cumulative[metrics_duration_buckets.n], 2);
	assert_int_equal(b->ttfb.cumulative[metrics_ttfb_buckets.n], 2);
	assert_int_equal(o->n_outcomes, 1);
	assert_int_equal(o->outcomes[0].count, 1);
	assert_int_equal(o->retries, 0);
	assert_int_equal(o->failovers, 0);
	assert_int_equal(o->duration.cumulative[metrics_duration_buckets.n], 1);
	assert_int_equal(s.jobs_queued, 0);
	assert_int_equal(s.jobs_in_flight, 0);
	metrics_snapshot_release(&s);
}

/* A Retry-After longer than an attempt may take: no waiting, no retry
 * on that candidate, straight to the next one. */
static void test_long_retry_after_fails_over_at_once(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *busy = deployment(f, 0, "busylong", 0);
	const struct model *ok = deployment(f, 1, "ok", 0);

	submit(f, r, &(struct plan_spec){ .candidates = { busy, ok }, .retries = 2 });
	assert_int_equal(recorder_wait_done(r), 0);
	assert_int_equal(r->n_started, 2);
	assert_ptr_equal(r->started[0], busy);
	assert_int_equal(r->ended[0].outcome, OUTCOME_HTTP_RETRYABLE);
	assert_ptr_equal(r->started[1], ok);
	assert_int_equal(r->ended[1].outcome, OUTCOME_OK);
}

/* ... and with no candidate left, the job fails at once, saying why. */
static void test_long_retry_after_without_candidate_fails(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *busy = deployment(f, 0, "busylong", 0);

	submit(f, r, &(struct plan_spec){ .candidates = { busy }, .retries = 2 });
	assert_int_equal(recorder_wait_done(r), -EIO);
	assert_int_equal(r->n_started, 1);
	assert_non_null(strstr(r->message, "wait 30 s"));
}

/* (c) 400 is final: one attempt, no retry, no failover. */
static void test_400_is_final(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *bad = deployment(f, 0, "bad", 0);
	const struct model *ok = deployment(f, 1, "ok", 0);

	submit(f, r, &(struct plan_spec){ .candidates = { bad, ok }, .retries = 2 });
	assert_int_equal(recorder_wait_done(r), -EIO);
	assert_int_equal(r->n_started, 1);
	assert_ptr_equal(r->started[0], bad);
	assert_int_equal(r->ended[0].outcome, OUTCOME_HTTP_REJECTED);
	assert_int_equal(r->ended[0].http_status, 400);
	assert_non_null(strstr(r->message, "Invalid value for temperature"));
	assert_int_equal(server_requests(&f->srv), 1);
}

/* (d) A filtered answer fails its attempt as content_filter: no retry,
 * no failover, and the finish reason says filtered. */
static void test_content_filter_fails_without_failover(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *filter = deployment(f, 0, "filter", 0);
	const struct model *ok = deployment(f, 1, "ok", 0);

	submit(f, r, &(struct plan_spec){ .candidates = { filter, ok }, .retries = 2 });
	assert_int_equal(recorder_wait_done(r), -EIO);
	assert_int_equal(r->n_started, 1);
	assert_ptr_equal(r->started[0], filter);
	assert_int_equal(r->ended[0].outcome, OUTCOME_CONTENT_FILTER);
	assert_int_equal(r->ended[0].http_status, 200);
	assert_int_equal(r->n_finish, 1);
	assert_int_equal(r->finish, FINISH_FILTERED);
	assert_non_null(strstr(r->message, "content_filter"));
	assert_int_equal(server_requests(&f->srv), 1);
}

/* (e) The deployment's cap on the answer's tokens: a request asking
 * more gets the cap, one asking less keeps its own, one asking nothing
 * gets the cap; without a cap the request goes as asked. */
static void test_token_cap(void **state)
{
	struct fixture *f = *state;
	const struct model *capped = deployment(f, 0, "ok", 50);
	const struct model *free_model = deployment(f, 1, "ok", 0);
	static const struct {
		int capped;
		long asked;
		long sent;
	} cases[] = {
		{ 1, 500, 50 }, { 1, 20, 20 }, { 1, 0, 50 }, { 1, 50, 50 }, { 0, 500, 500 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct recorder *r = &f->rec[0];

		recorder_destroy(r);
		recorder_init(r);
		submit(f, r,
		       &(struct plan_spec){ .candidates = { cases[i].capped ? capped : free_model },
					    .max_tokens = cases[i].asked });
		assert_int_equal(recorder_wait_done(r), 0);
		assert_int_equal(server_requests(&f->srv), i + 1);
		assert_int_equal(server_max_tokens(&f->srv, i), cases[i].sent);
	}
}

/* The cap is the candidate's own: after failover the next deployment's
 * cap applies, not the first one's. */
static void test_token_cap_per_candidate(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *busy = deployment(f, 0, "busy", 30);
	const struct model *ok = deployment(f, 1, "ok", 80);

	submit(f, r,
	       &(struct plan_spec){ .candidates = { busy, ok }, .retries = 0, .max_tokens = 500 });
	assert_int_equal(recorder_wait_done(r), 0);
	assert_int_equal(server_requests(&f->srv), 2);
	assert_seen_path(&f->srv, 0, "busy");
	assert_int_equal(server_max_tokens(&f->srv, 0), 30);
	assert_seen_path(&f->srv, 1, "ok");
	assert_int_equal(server_max_tokens(&f->srv, 1), 80);
}

/* (g) Cancelling a job whose server never answers: its attempt ends
 * once, as cancelled, then done(-ECANCELED). */
static void test_cancel_silent(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *silent = deployment(f, 0, "silent", 0);
	const struct model *ok = deployment(f, 1, "ok", 0);
	struct engine_job *job;

	job = submit(f, r, &(struct plan_spec){ .candidates = { silent, ok }, .retries = 2 });
	server_wait_requests(&f->srv, 1);
	engine_cancel(f->engine, job);
	assert_int_equal(recorder_wait_done(r), -ECANCELED);
	assert_int_equal(r->n_started, 1);
	assert_int_equal(r->n_ended, 1);
	assert_ptr_equal(r->ended[0].model, silent);
	assert_int_equal(r->ended[0].outcome, OUTCOME_CANCELLED);
	assert_int_equal(r->ended[0].http_status, 0);
	assert_int_equal(r->ended[0].ttfb_ms, -1); /* no byte came */
	/* no failover after a cancel */
	assert_int_equal(server_requests(&f->srv), 1);
}

/* Cancelling a job that waits between attempts: no new attempt, done(-ECANCELED). */
static void test_cancel_in_backoff(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *busy = deployment(f, 0, "busy3", 0);
	struct engine_job *job;

	job = submit(f, r, &(struct plan_spec){ .candidates = { busy }, .retries = 2 });
	recorder_wait_ended(r, 1); /* now it waits 3 s for its retry */
	engine_cancel(f->engine, job);
	assert_int_equal(recorder_wait_done(r), -ECANCELED);
	assert_int_equal(r->n_started, 1);
	assert_int_equal(r->ended[0].outcome, OUTCOME_HTTP_RETRYABLE);
	assert_int_equal(server_requests(&f->srv), 1);
}

/* (h) A silent first candidate hits the first-token timeout; the job
 * fails over to a healthy second one. */
static void test_first_token_timeout_fails_over(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *silent = deployment(f, 0, "silent", 0);
	const struct model *ok = deployment(f, 1, "ok", 0);

	submit(f, r,
	       &(struct plan_spec){
		       .candidates = { silent, ok }, .retries = 0, .first_token_timeout_s = 0.3 });
	assert_int_equal(recorder_wait_done(r), 0);
	assert_int_equal(r->n_started, 2);
	assert_ptr_equal(r->started[0], silent);
	assert_int_equal(r->ended[0].outcome, OUTCOME_FIRST_TOKEN_TIMEOUT);
	assert_true(r->ended[0].elapsed_ms >= 300);
	assert_int_equal(r->ended[0].ttfb_ms, -1);
	assert_ptr_equal(r->started[1], ok);
	assert_int_equal(r->ended[1].outcome, OUTCOME_OK);
	assert_string_equal(r->text, "hi");
}

/* The attempt's own time limit with a silent server, one candidate. */
static void test_attempt_timeout(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *silent = deployment(f, 0, "silent", 0);

	submit(f, r,
	       &(struct plan_spec){ .candidates = { silent }, .retries = 0, .timeout_s = 0.4 });
	assert_int_equal(recorder_wait_done(r), -EIO);
	assert_int_equal(r->n_started, 1);
	assert_int_equal(r->ended[0].outcome, OUTCOME_TIMEOUT);
	/* curl keeps its timers in whole milliseconds: it may end 1 ms early */
	assert_true(r->ended[0].elapsed_ms >= 390);
}

/* Two jobs at once on different candidates keep their reports apart. */
static void test_two_jobs_at_once(void **state)
{
	struct fixture *f = *state;
	const struct model *busy = deployment(f, 0, "busy", 0);
	const struct model *ok = deployment(f, 1, "ok", 0);
	const struct model *bad = deployment(f, 2, "bad", 0);

	submit(f, &f->rec[0], &(struct plan_spec){ .candidates = { busy, ok }, .retries = 1 });
	submit(f, &f->rec[1], &(struct plan_spec){ .candidates = { bad, ok }, .retries = 1 });
	assert_int_equal(recorder_wait_done(&f->rec[0]), 0);
	assert_int_equal(recorder_wait_done(&f->rec[1]), -EIO);
	assert_int_equal(f->rec[0].n_started, 3);
	assert_ptr_equal(f->rec[0].ended[2].model, ok);
	assert_int_equal(f->rec[1].n_started, 1);
	assert_int_equal(f->rec[1].ended[0].outcome, OUTCOME_HTTP_REJECTED);
	assert_int_equal(server_requests(&f->srv), 4);
}

/* Every candidate spent: retries on each, in order, then the job fails. */
static void test_all_candidates_spent(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *first = deployment(f, 0, "busy", 0);
	const struct model *second = deployment(f, 1, "busy", 0);

	submit(f, r, &(struct plan_spec){ .candidates = { first, second }, .retries = 1 });
	assert_int_equal(recorder_wait_done(r), -EIO);
	assert_int_equal(r->n_started, 4);
	assert_ptr_equal(r->started[0], first);
	assert_ptr_equal(r->started[1], first);
	assert_ptr_equal(r->started[2], second);
	assert_ptr_equal(r->started[3], second);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(r->ended[i].outcome, OUTCOME_HTTP_RETRYABLE);
	assert_int_equal(server_requests(&f->srv), 4);
}

/* A job cancelled while it waits for a transfer slot never starts an
 * attempt. */
static void test_cancel_waiting_job(void **state)
{
	struct fixture *f = *state;
	struct engine_options opts = {
		.max_inflight = 1,
		.connect_timeout_s = 2,
		.max_answer_bytes = 1 << 20,
		.max_body_bytes = 4 << 20,
	};
	const struct model *silent = deployment(f, 0, "silent", 0);
	const struct model *ok = deployment(f, 1, "ok", 0);
	struct engine_job *first, *second;
	int err = 0;

	engine_free(f->engine);
	f->engine = engine_new(&opts, &err);
	assert_non_null(f->engine);
	first = submit(f, &f->rec[0], &(struct plan_spec){ .candidates = { silent } });
	server_wait_requests(&f->srv, 1);
	second = submit(f, &f->rec[1], &(struct plan_spec){ .candidates = { ok } });
	engine_cancel(f->engine, second);
	assert_int_equal(recorder_wait_done(&f->rec[1]), -ECANCELED);
	assert_int_equal(f->rec[1].n_started, 0);
	engine_cancel(f->engine, first);
	assert_int_equal(recorder_wait_done(&f->rec[0]), -ECANCELED);
	assert_int_equal(f->rec[0].n_ended, 1);
	assert_int_equal(f->rec[0].ended[0].outcome, OUTCOME_CANCELLED);
	assert_int_equal(server_requests(&f->srv), 1);
}

/* engine_free ends every job it holds: the attempt in flight as
 * cancelled, the job in backoff without another attempt. */
static void test_engine_free_ends_every_job(void **state)
{
	struct fixture *f = *state;
	const struct model *silent = deployment(f, 0, "silent", 0);
	const struct model *busy = deployment(f, 1, "busy3", 0);

	submit(f, &f->rec[0], &(struct plan_spec){ .candidates = { silent } });
	submit(f, &f->rec[1], &(struct plan_spec){ .candidates = { busy }, .retries = 2 });
	server_wait_requests(&f->srv, 2);
	recorder_wait_ended(&f->rec[1], 1);
	engine_free(f->engine);
	f->engine = NULL;
	assert_int_equal(recorder_wait_done(&f->rec[0]), -ECANCELED);
	assert_int_equal(f->rec[0].n_started, 1);
	assert_int_equal(f->rec[0].ended[0].outcome, OUTCOME_CANCELLED);
	assert_int_equal(recorder_wait_done(&f->rec[1]), -ECANCELED);
	assert_int_equal(f->rec[1].n_started, 1);
	assert_int_equal(f->rec[1].ended[0].outcome, OUTCOME_HTTP_RETRYABLE);
}

/* A plan without candidates is refused, its request released (ASan
 * sees a leak otherwise). */
static void test_plan_without_candidates(void **state)
{
	struct fixture *f = *state;
	struct engine_plan plan = { .sink = &recording_sink, .sink_ctx = &f->rec[0] };

	plan.request.messages = calloc(1, sizeof(*plan.request.messages));
	assert_non_null(plan.request.messages);
	plan.request.n_messages = 1;
	plan.request.messages[0].role = strdup("user");
	plan.request.messages[0].content = strdup("hello");
	assert_null(engine_submit(f->engine, &plan));
	assert_int_equal(f->rec[0].n_started, 0);
	assert_int_equal(f->rec[0].done_calls, 0);
}

/* ---- retry discipline and circuit breaking ------------------------------ */

/* Replaces F's engine by one whose circuit breakers open after
 * THRESHOLD failures for COOLDOWN seconds (doubling up to 4 times). */
static void engine_with_breaker(struct fixture *f, unsigned threshold, double cooldown)
{
	struct engine_options opts = {
		.max_inflight = 4,
		.connect_timeout_s = 2,
		.max_answer_bytes = 1 << 20,
		.max_body_bytes = 4 << 20,
		.breaker = { .threshold = threshold,
			     .cooldown_s = cooldown,
			     .cooldown_max_s = 4 * cooldown },
	};
	int err = 0;

	engine_free(f->engine);
	f->engine = engine_new(&opts, &err);
	assert_non_null(f->engine);
}

static void server_set_down(struct server *srv, int down)
{
	pthread_mutex_lock(&srv->lock);
	srv->switch_down = down;
	pthread_mutex_unlock(&srv->lock);
}

/* The circuit state the engine last published for MODEL (a job's end
 * is published before its done()); closed with no failures when it has
 * none. */
static struct engine_breaker_entry circuit_of(struct engine *e, const struct model *model)
{
	struct engine_breaker_entry entries[8];
	struct engine_breaker_entry none = { .model = model, .state = BREAKER_CLOSED };
	size_t n = engine_breaker_snapshot(e, entries, 8);

	assert_true(n <= 8);
	for (size_t i = 0; i < n; i++) {
		if (entries[i].model == model)
			return entries[i];
	}
	return none;
}

/* Retry-After: 0 keeps the exponential minimum: no retry within 0.5 s. */
static void test_retry_after_zero_keeps_the_floor(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *busy = deployment(f, 0, "busy", 0);

	submit(f, r, &(struct plan_spec){ .candidates = { busy }, .retries = 2 });
	assert_int_equal(recorder_wait_done(r), -EIO);
	assert_int_equal(r->n_started, 3);
	/* the floors of the first and second retries: 0.5 s and 1 s */
	assert_true(r->started_at[1] - r->ended_at[0] >= 0.5);
	assert_true(r->started_at[2] - r->ended_at[1] >= 1.0);
}

/* A 429 slows every job sent to that deployment, not only the one that
 * saw it: a job submitted after it waits for the deployment's turn. */
static void test_rate_limit_slows_every_job(void **state)
{
	struct fixture *f = *state;
	const struct model *rl = deployment(f, 0, "rl", 0);
	double limited_at;

	submit(f, &f->rec[0], &(struct plan_spec){ .candidates = { rl }, .retries = 0 });
	assert_int_equal(recorder_wait_done(&f->rec[0]), -EIO);
	assert_int_equal(f->rec[0].ended[0].http_status, 429);
	limited_at = f->rec[0].ended_at[0];
	assert_true(circuit_of(f->engine, rl).not_before > 0);
	/* the 429 is no failure of the deployment: its circuit stays closed */
	assert_int_equal(circuit_of(f->engine, rl).consecutive_failures, 0);

	submit(f, &f->rec[1], &(struct plan_spec){ .candidates = { rl }, .retries = 0 });
	assert_int_equal(recorder_wait_done(&f->rec[1]), 0);
	assert_int_equal(f->rec[1].n_started, 1);
	/* Retry-After: 1, less what the clocks of two threads may differ */
	assert_true(f->rec[1].started_at[0] - limited_at >= 0.95);
	assert_int_equal(server_requests(&f->srv), 2);
}

/* A deployment answering 429 to everything: every retry waits its
 * growing floor, and the job ends after its retries. */
static void test_persistent_rate_limit_backs_off(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *rl0 = deployment(f, 0, "rl0", 0);

	submit(f, r, &(struct plan_spec){ .candidates = { rl0 }, .retries = 2 });
	assert_int_equal(recorder_wait_done(r), -EIO);
	assert_int_equal(r->n_started, 3);
	assert_true(r->started_at[1] - r->ended_at[0] >= 0.5);
	assert_true(r->started_at[2] - r->ended_at[1] >= 1.0);
	assert_int_equal(server_requests(&f->srv), 3);
}

/* The back-off's own floor is no demand of the provider: a job whose
 * attempt limit is shorter than the floor still retries after it. */
static void test_floor_longer_than_the_time_left_still_retries(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *rl0 = deployment(f, 0, "rl0", 0);

	submit(f, r, &(struct plan_spec){ .candidates = { rl0 }, .retries = 1, .timeout_s = 0.3 });
	assert_int_equal(recorder_wait_done(r), -EIO);
	assert_int_equal(r->n_started, 2);
	assert_true(r->started_at[1] - r->ended_at[0] >= 0.5);
	assert_null(strstr(r->message, "asked to wait"));
}

/* A deployment whose throttle asks longer than an attempt may take is
 * skipped for the next candidate, without waiting. */
static void test_throttle_longer_than_the_time_left_fails_over(void **state)
{
	struct fixture *f = *state;
	const struct model *busy = deployment(f, 0, "busylong", 0);
	const struct model *ok = deployment(f, 1, "ok", 0);

	submit(f, &f->rec[0], &(struct plan_spec){ .candidates = { busy }, .retries = 2 });
	assert_int_equal(recorder_wait_done(&f->rec[0]), -EIO);
	/* another job: its first candidate has asked everyone for 30 s */
	submit(f, &f->rec[1], &(struct plan_spec){ .candidates = { busy, ok }, .retries = 2 });
	assert_int_equal(recorder_wait_done(&f->rec[1]), 0);
	assert_int_equal(f->rec[1].n_started, 1);
	assert_ptr_equal(f->rec[1].started[0], ok);
	/* and with no other candidate it fails at once, saying why */
	submit(f, &f->rec[2], &(struct plan_spec){ .candidates = { busy }, .retries = 2 });
	assert_int_equal(recorder_wait_done(&f->rec[2]), -EIO);
	assert_int_equal(f->rec[2].n_started, 0);
	assert_non_null(strstr(f->rec[2].message, "asked to wait 30 s"));
	assert_int_equal(server_requests(&f->srv), 2);
}

/* A silent deployment is not asked again before the other candidates
 * have been tried, even with retries to spare... */
static void test_first_token_timeout_tries_the_others_first(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *silent = deployment(f, 0, "silent", 0);
	const struct model *ok = deployment(f, 1, "ok", 0);

	submit(f, r,
	       &(struct plan_spec){
		       .candidates = { silent, ok }, .retries = 2, .first_token_timeout_s = 0.3 });
	assert_int_equal(recorder_wait_done(r), 0);
	assert_int_equal(r->n_started, 2);
	assert_ptr_equal(r->started[0], silent);
	assert_int_equal(r->ended[0].outcome, OUTCOME_FIRST_TOKEN_TIMEOUT);
	assert_ptr_equal(r->started[1], ok);
}

/* ... and comes back to its remaining retries when they have failed. */
static void test_timed_out_candidate_is_retried_last(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *silent = deployment(f, 0, "silent", 0);
	const struct model *busy = deployment(f, 1, "busy", 0);

	submit(f, r,
	       &(struct plan_spec){ .candidates = { silent, busy },
				    .retries = 1,
				    .first_token_timeout_s = 0.3 });
	assert_int_equal(recorder_wait_done(r), -EIO);
	assert_int_equal(r->n_started, 4);
	assert_ptr_equal(r->started[0], silent);
	assert_ptr_equal(r->started[1], busy);
	assert_ptr_equal(r->started[2], busy);
	assert_ptr_equal(r->started[3], silent);
	assert_int_equal(r->ended[3].outcome, OUTCOME_FIRST_TOKEN_TIMEOUT);
}

/* A prompt too long for the model: one attempt, context_length, the
 * provider's reason, no failover. */
static void test_context_length_is_final(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *toolong = deployment(f, 0, "toolong", 0);
	const struct model *ok = deployment(f, 1, "ok", 0);

	submit(f, r, &(struct plan_spec){ .candidates = { toolong, ok }, .retries = 2 });
	assert_int_equal(recorder_wait_done(r), -EIO);
	assert_int_equal(r->n_started, 1);
	assert_int_equal(r->ended[0].outcome, OUTCOME_CONTEXT_LENGTH);
	assert_non_null(strstr(r->message, "maximum context length is 128000 tokens"));
	assert_int_equal(server_requests(&f->srv), 1);
	/* the request's own fault says nothing of the deployment */
	assert_int_equal(circuit_of(f->engine, toolong).consecutive_failures, 0);
}

/* Failures in a row open the circuit: the next job is not sent there
 * and fails at once naming it; after the cool-down one probe goes, and
 * its success closes the circuit. */
static void test_circuit_opens_then_probe_closes(void **state)
{
	struct fixture *f = *state;
	const struct model *sw = deployment(f, 0, "switch", 0);
	struct engine_breaker_entry c;

	engine_with_breaker(f, 2, 1.0);
	server_set_down(&f->srv, 1);
	submit(f, &f->rec[0], &(struct plan_spec){ .candidates = { sw }, .retries = 1 });
	assert_int_equal(recorder_wait_done(&f->rec[0]), -EIO);
	assert_int_equal(f->rec[0].n_started, 2);
	c = circuit_of(f->engine, sw);
	assert_int_equal(c.state, BREAKER_OPEN);
	assert_int_equal(c.consecutive_failures, 2);
	assert_int_equal(c.opened_total, 1);
	assert_true(c.open_until > 0);

	/* open: not sent, fails at once, saying why */
	submit(f, &f->rec[1], &(struct plan_spec){ .candidates = { sw }, .retries = 2 });
	assert_int_equal(recorder_wait_done(&f->rec[1]), -EIO);
	assert_int_equal(f->rec[1].n_started, 0);
	assert_non_null(strstr(f->rec[1].message, "not sent"));
	assert_non_null(strstr(f->rec[1].message, "local/localhost/switch is skipped"));
	assert_non_null(strstr(f->rec[1].message, "2 failed attempts in a row"));
	assert_int_equal(server_requests(&f->srv), 2);
	/* the sink hears of the skip too, with the reason for .meta */
	assert_int_equal(f->rec[1].n_skipped, 1);
	assert_ptr_equal(f->rec[1].skipped[0], sw);
	assert_non_null(strstr(f->rec[1].skip_reason[0], "circuit open until "));
	assert_non_null(strstr(f->rec[1].skip_reason[0], "after 2 failed attempts in a row"));

	/* the cool-down passes, the deployment is back: one probe closes it */
	server_set_down(&f->srv, 0);
	pass_time(1.05);
	submit(f, &f->rec[2], &(struct plan_spec){ .candidates = { sw }, .retries = 2 });
	assert_int_equal(recorder_wait_done(&f->rec[2]), 0);
	assert_int_equal(f->rec[2].n_started, 1);
	c = circuit_of(f->engine, sw);
	assert_int_equal(c.state, BREAKER_CLOSED);
	assert_int_equal(c.consecutive_failures, 0);
	assert_true(c.open_until == 0);
	assert_int_equal(server_requests(&f->srv), 3);
}

/* A probe that fails opens the circuit again, for twice as long. */
static void test_failed_probe_doubles_the_cooldown(void **state)
{
	struct fixture *f = *state;
	const struct model *sw = deployment(f, 0, "switch", 0);
	struct engine_breaker_entry c;
	double opened;

	engine_with_breaker(f, 2, 1.0);
	server_set_down(&f->srv, 1);
	submit(f, &f->rec[0], &(struct plan_spec){ .candidates = { sw }, .retries = 1 });
	assert_int_equal(recorder_wait_done(&f->rec[0]), -EIO);
	pass_time(1.05);
	/* the probe fails: open again, now for 2 s */
	submit(f, &f->rec[1], &(struct plan_spec){ .candidates = { sw }, .retries = 2 });
	assert_int_equal(recorder_wait_done(&f->rec[1]), -EIO);
	assert_int_equal(f->rec[1].n_started, 1);
	opened = now_s();
	c = circuit_of(f->engine, sw);
	assert_int_equal(c.state, BREAKER_OPEN);
	assert_int_equal(c.opened_total, 2);
	assert_int_equal(c.consecutive_failures, 3);
	assert_int_equal(server_requests(&f->srv), 3);
	/* after the first cool-down's length it is still open */
	pass_time(1.05);
	if (now_s() - opened < 1.9) {
		submit(f, &f->rec[2], &(struct plan_spec){ .candidates = { sw }, .retries = 2 });
		assert_int_equal(recorder_wait_done(&f->rec[2]), -EIO);
		assert_int_equal(f->rec[2].n_started, 0);
		assert_int_equal(server_requests(&f->srv), 3);
	}
}

/* An open candidate is skipped for the next one, with no attempt on it. */
static void test_open_candidate_is_skipped(void **state)
{
	struct fixture *f = *state;
	const struct model *sw = deployment(f, 0, "switch", 0);
	const struct model *ok = deployment(f, 1, "ok", 0);

	engine_with_breaker(f, 2, 30);
	server_set_down(&f->srv, 1);
	submit(f, &f->rec[0], &(struct plan_spec){ .candidates = { sw }, .retries = 1 });
	assert_int_equal(recorder_wait_done(&f->rec[0]), -EIO);
	submit(f, &f->rec[1], &(struct plan_spec){ .candidates = { sw, ok }, .retries = 2 });
	assert_int_equal(recorder_wait_done(&f->rec[1]), 0);
	assert_int_equal(f->rec[1].n_started, 1);
	assert_ptr_equal(f->rec[1].started[0], ok);
	assert_int_equal(f->rec[1].n_skipped, 1);
	assert_ptr_equal(f->rec[1].skipped[0], sw);
	assert_int_equal(server_requests(&f->srv), 3);
	/* the snapshot lists both deployments the engine has sent to */
	assert_int_equal(engine_breaker_snapshot(f->engine, NULL, 0), 2);
	assert_int_equal(circuit_of(f->engine, ok).state, BREAKER_CLOSED);
}

/* A job retrying on a deployment whose circuit opens meanwhile spends
 * no more retries there: it moves on to its next candidate. */
static void test_circuit_opening_under_a_retrying_job(void **state)
{
	struct fixture *f = *state;
	struct recorder *r = &f->rec[0];
	const struct model *sw = deployment(f, 0, "switch", 0);
	const struct model *ok = deployment(f, 1, "ok", 0);

	engine_with_breaker(f, 2, 30);
	server_set_down(&f->srv, 1);
	submit(f, r, &(struct plan_spec){ .candidates = { sw, ok }, .retries = 5 });
	assert_int_equal(recorder_wait_done(r), 0);
	assert_int_equal(r->n_started, 3);
	assert_ptr_equal(r->started[0], sw);
	assert_ptr_equal(r->started[1], sw);
	assert_ptr_equal(r->started[2], ok);
	assert_int_equal(server_requests(&f->srv), 3);
}

#define ENGINE_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		ENGINE_TEST(test_answer_and_ttfb),
		ENGINE_TEST(test_retries_spent_on_one_candidate),
		ENGINE_TEST(test_retry_then_answer),
		ENGINE_TEST(test_failover_after_retries),
		ENGINE_TEST(test_metrics_of_retries_and_failover),
		ENGINE_TEST(test_long_retry_after_fails_over_at_once),
		ENGINE_TEST(test_long_retry_after_without_candidate_fails),
		ENGINE_TEST(test_400_is_final),
		ENGINE_TEST(test_content_filter_fails_without_failover),
		ENGINE_TEST(test_token_cap),
		ENGINE_TEST(test_token_cap_per_candidate),
		ENGINE_TEST(test_cancel_silent),
		ENGINE_TEST(test_cancel_in_backoff),
		ENGINE_TEST(test_first_token_timeout_fails_over),
		ENGINE_TEST(test_attempt_timeout),
		ENGINE_TEST(test_two_jobs_at_once),
		ENGINE_TEST(test_all_candidates_spent),
		ENGINE_TEST(test_cancel_waiting_job),
		ENGINE_TEST(test_engine_free_ends_every_job),
		ENGINE_TEST(test_plan_without_candidates),
		ENGINE_TEST(test_retry_after_zero_keeps_the_floor),
		ENGINE_TEST(test_rate_limit_slows_every_job),
		ENGINE_TEST(test_persistent_rate_limit_backs_off),
		ENGINE_TEST(test_floor_longer_than_the_time_left_still_retries),
		ENGINE_TEST(test_throttle_longer_than_the_time_left_fails_over),
		ENGINE_TEST(test_first_token_timeout_tries_the_others_first),
		ENGINE_TEST(test_timed_out_candidate_is_retried_last),
		ENGINE_TEST(test_context_length_is_final),
		ENGINE_TEST(test_circuit_opens_then_probe_closes),
		ENGINE_TEST(test_failed_probe_doubles_the_cooldown),
		ENGINE_TEST(test_open_candidate_is_skipped),
		ENGINE_TEST(test_circuit_opening_under_a_retrying_job),
	};
	int rc;

	curl_global_init(CURL_GLOBAL_ALL);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
