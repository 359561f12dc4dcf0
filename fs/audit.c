/* state_dir/audit.jsonl: when lines are written, and how none is lost or
 * written twice (see audit.h; the format is audit_line.c). */
#include "fs/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs/audit_internal.h"
#include "fs/audit_line.h"
#include "fs/job_internal.h"
#include "fs/log.h"
#include "fs/policy_store.h"
#include "fs/state.h"

/* Text is hashed, escaped and written this much at a time. */
#define CHUNK (64 * 1024)
/* A line that could not be written waits in memory, up to these. */
#define PENDING_LINE_MAX (1024 * 1024)
#define PENDING_TOTAL_MAX (64 * 1024 * 1024)

/* What a job keeps for its line (job->audit). */
struct audit_job {
	int want_text; /* audit_prompts was true where it was submitted */
	char *prompt;  /* then its text (NULL if it could not be kept) */
	size_t prompt_len;
	char *path; /* its prompt's path then, should its directory go */
};

static pthread_mutex_t audit_lock = PTHREAD_MUTEX_INITIALIZER;
static int audit_fd = -1; /* under audit_lock; -1: opened at the next line */
static int audit_failing; /* the last write failed (said once in the log) */
/* lines that could not be written, oldest first (under audit_lock) */
struct pending_line {
	char *text;
	size_t len;
	struct pending_line *next;
};
static struct pending_line *pending_head, **pending_tail = &pending_head;
static size_t pending_bytes;
/* the file at the last checkpoint's cut (under audit_lock) */
static struct stat cut_stat;
static int cut_known;

void audit_now(char out[AUDIT_TIME_SIZE])
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, AUDIT_TIME_SIZE, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Up to SIZE bytes of T from OFF: its length, 0 at its end, -errno. */
static ssize_t text_read(const struct text *t, off_t off, char *buf, size_t size)
{
	ssize_t n;

	if (t->fd < 0) {
		size_t left = (size_t)off < t->len ? t->len - (size_t)off : 0;

		n = (ssize_t)(left < size ? left : size);
		memcpy(buf, t->data + off, (size_t)n);
		return n;
	}
	do
		n = pread(t->fd, buf, size, off);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

/* The SHA-256 of T in hex, streamed CHUNK bytes at a time. 0 or -errno. */
static int text_sha256(const struct text *t, char hex[65])
{
	EVP_MD_CTX *md;
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int n_digest = 0;
	off_t off = 0;
	ssize_t n = -ENOMEM;
	char *buf;

	if (t->fd < 0) {
		/* in memory already: no copy */
		job_sha256_hex(t->data, t->len, hex);
		return 0;
	}
	md = EVP_MD_CTX_new();
	buf = malloc(CHUNK);
	if (md && buf && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1) {
		while ((n = text_read(t, off, buf, CHUNK)) > 0) {
			if (EVP_DigestUpdate(md, buf, (size_t)n) != 1) {
				n = -EIO;
				break;
			}
			off += n;
		}
	}
	if (n == 0 && EVP_DigestFinal_ex(md, digest, &n_digest) != 1)
		n = -EIO;
	for (unsigned int i = 0; n == 0 && i < n_digest; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	free(buf);
	EVP_MD_CTX_free(md);
	return (int)n;
}

/* ---- writing lines ---- */

/* Where a line goes: the file, or memory (up to LIMIT bytes). */
struct sink {
	int fd;
	char *mem;
	size_t len, cap, limit;
	int err; /* -errno once something failed */
};

static void sink_put(struct sink *s, const char *p, size_t n)
{
	if (s->err || n == 0)
		return;
	if (s->fd >= 0) {
		while (n > 0) {
			ssize_t w = write(s->fd, p, n);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				s->err = w < 0 ? -errno : -EIO;
				return;
			}
			p += w;
			n -= (size_t)w;
		}
		return;
	}
	if (s->len + n > s->limit) {
		s->err = -EFBIG;
		return;
	}
	if (s->len + n > s->cap) {
		size_t cap = s->cap ? s->cap : 1024;
		char *grown;

		while (cap < s->len + n)
			cap *= 2;
		grown = realloc(s->mem, cap);
		if (!grown) {
			s->err = -ENOMEM;
			return;
		}
		s->mem = grown;
		s->cap = cap;
	}
	memcpy(s->mem + s->len, p, n);
	s->len += n;
}

static void sink_put_str(struct sink *s, const char *str)
{
	sink_put(s, str, strlen(str));
}

/* ,"KEY":"escaped text" (or null), read and escaped a chunk at a time. */
static void sink_put_text(struct sink *s, const char *key, const struct text *t)
{
	char *in = NULL, *out = NULL;
	size_t carry = 0;
	off_t off = 0;

	sink_put_str(s, ",\"");
	sink_put_str(s, key);
	sink_put_str(s, "\":");
	if (!t->present) {
		sink_put_str(s, "null");
		return;
	}
	in = malloc(CHUNK + 4);
	out = malloc(AUDIT_ESCAPE_MAX(CHUNK + 4));
	if (!in || !out)
		s->err = s->err ? s->err : -ENOMEM;
	sink_put_str(s, "\"");
	while (!s->err) {
		ssize_t n = text_read(t, off, in + carry, CHUNK);
		size_t used, len, o;

		if (n < 0) {
			s->err = (int)n;
			break;
		}
		off += n;
		len = carry + (size_t)n;
		/* a character cut by the chunk's end waits for its rest */
		o = audit_json_escape(in, len, n == 0, out, &used);
		sink_put(s, out, o);
		carry = len - used;
		memmove(in, in + used, carry);
		if (n == 0)
			break;
	}
	sink_put_str(s, "\"");
	free(out);
	free(in);
}

/* The whole line into S. */
static void emit(struct sink *s, const char *head, size_t head_len, int want_text,
		 const struct text *prompt, const struct text *response)
{
	sink_put(s, head, head_len);
	if (want_text) {
		sink_put_text(s, "prompt", prompt);
		sink_put_text(s, "response", response);
	}
	sink_put_str(s, AUDIT_LINE_END);
}

static int open_locked(void)
{
	int fd;

	if (audit_fd >= 0)
		return 0;
	fd = openat(pfs.state_fd, AUDIT_FILE,
		    O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd >= 0)
		fchmod(fd, 0600); /* whatever the umask: it holds who asked what */
	else if (errno == EEXIST)
		fd = openat(pfs.state_fd, AUDIT_FILE, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	audit_fd = fd;
	return 0;
}

/* Writes the lines that waited, oldest first. 0 when none is left. */
static int flush_pending_locked(void)
{
	while (pending_head) {
		struct pending_line *p = pending_head;
		struct sink s = { .fd = audit_fd };
		struct stat st;
		int rc = open_locked();

		if (rc == 0) {
			s.fd = audit_fd;
			rc = fstat(audit_fd, &st) < 0 ? -errno : 0;
		}
		if (rc == 0) {
			sink_put(&s, p->text, p->len);
			rc = s.err;
			if (rc < 0 && ftruncate(audit_fd, st.st_size) < 0)
				log_error("audit: %s: cannot remove a partial line: %s", AUDIT_FILE,
					  strerror(errno));
		}
		if (rc < 0)
			return rc;
		pending_head = p->next;
		if (!pending_head)
			pending_tail = &pending_head;
		pending_bytes -= p->len;
		free(p->text);
		free(p);
	}
	return 0;
}

/* Keeps LINE (LEN bytes, taken over) for later. */
static void keep_pending_locked(char *line, size_t len)
{
	struct pending_line *p = malloc(sizeof(*p));

	if (!p || pending_bytes + len > PENDING_TOTAL_MAX) {
		log_error("audit: a line is lost: %s cannot be written and too much waits",
			  AUDIT_FILE);
		free(p);
		free(line);
		return;
	}
	p->text = line;
	p->len = len;
	p->next = NULL;
	*pending_tail = p;
	pending_tail = &p->next;
	pending_bytes += len;
}

/* Writes what EMIT gives to the file, whole or not at all: a failed
 * write is cut off again. LINE, when not NULL, is the line already
 * rendered (LEN bytes); else it is streamed. 0 or -errno. */
static int append_locked(const char *line, size_t len, const char *head, size_t head_len,
			 int want_text, const struct text *prompt, const struct text *response)
{
	struct sink s = { .fd = audit_fd };
	struct stat st;
	int rc = flush_pending_locked();

	if (rc == 0)
		rc = open_locked();
	if (rc == 0)
		rc = fstat(audit_fd, &st) < 0 ? -errno : 0;
	if (rc < 0)
		return rc;
	s.fd = audit_fd;
	if (line)
		sink_put(&s, line, len);
	else
		emit(&s, head, head_len, want_text, prompt, response);
	if (s.err && ftruncate(audit_fd, st.st_size) < 0)
		log_error("audit: %s: cannot remove a partial line: %s", AUDIT_FILE,
			  strerror(errno));
	return s.err;
}

/* One line: R, then the texts when WANT_TEXT. Rendered in memory and
 * written with one write(2), so that a reader of the file (tail -f)
 * never sees half of it; only a line longer than PENDING_LINE_MAX (a
 * long answer's text) is streamed in pieces. A line that cannot be
 * written waits in memory for the next one. */
static void write_line(const struct audit_record *r, int want_text, const struct text *prompt,
		       const struct text *response)
{
	struct sink mem = { .fd = -1, .limit = PENDING_LINE_MAX };
	size_t head_len = 0;
	char *head = audit_line_head(r, &head_len);
	int rc;

	if (!head) {
		log_error("audit: out of memory: a line is lost");
		return;
	}
	/* the texts are read outside the lock */
	emit(&mem, head, head_len, want_text, prompt, response);
	if (mem.err && mem.err != -EFBIG) {
		struct text none = { 0 };

		log_warn("audit: a text could not be read (%s): its line goes without it",
			 strerror(-mem.err));
		free(mem.mem);
		mem = (struct sink){ .fd = -1, .limit = PENDING_LINE_MAX };
		emit(&mem, head, head_len, want_text, &none, &none);
	}
	pthread_mutex_lock(&audit_lock);
	if (mem.err && mem.err != -EFBIG)
		rc = mem.err;
	else
		rc = append_locked(mem.err ? NULL : mem.mem, mem.len, head, head_len, want_text,
				   prompt, response);
	if (rc < 0) {
		if (!audit_failing)
			log_error("audit: cannot write %s: %s; lines wait in memory", AUDIT_FILE,
				  strerror(-rc));
		audit_failing = 1;
		if (mem.err) {
			/* too long to hold: the hashes wait, the texts do not */
			struct text none = { 0 };

			log_warn("audit: a line waiting for room is kept without its texts");
			free(mem.mem);
			mem = (struct sink){ .fd = -1, .limit = PENDING_LINE_MAX };
			emit(&mem, head, head_len, want_text, &none, &none);
		}
		if (mem.err)
			free(mem.mem);
		else
			keep_pending_locked(mem.mem, mem.len);
		mem.mem = NULL;
	} else if (audit_failing) {
		log_info("audit: %s is written again", AUDIT_FILE);
		audit_failing = 0;
	}
	pthread_mutex_unlock(&audit_lock);
	free(mem.mem);
	free(head);
}

/* ---- a job's line ---- */

static int policy_wants_text(struct node *dir)
{
	struct effective_policy e = { 0 };
	int want;

	if (!dir || policy_store_effective(dir, &e) < 0)
		return 0;
	want = e.audit_prompts;
	effective_release(&e);
	return want;
}

/* NAME.SUFFIX in DIR opened for reading, or -1. */
int audit_open_job_file(struct node *dir, const char *base, const char *suffix)
{
	char *name = name_with_suffix(base, suffix);
	int fd = -1, dir_fd = node_dir_fd(dir);

	if (dir_fd >= 0 && name)
		fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	node_dir_fd_release(dir, dir_fd);
	free(name);
	return fd < 0 ? -1 : fd;
}

/* The prompt file, when it still holds the text of hash SHA. -1 if not. */
static int open_prompt_as(struct node *dir, const char *base, const char *sha)
{
	struct text t = { .present = 1 };
	char hex[65];

	if (!dir || !sha)
		return -1;
	t.fd = audit_open_job_file(dir, base, ".prompt");
	if (t.fd >= 0 && (text_sha256(&t, hex) < 0 || strcmp(hex, sha) != 0)) {
		close(t.fd);
		t.fd = -1;
	}
	return t.fd;
}

/* The prompt's path in the mount: MOUNTPOINT/DIR/BASE.prompt. */
static void mount_path(const char *dir_path, const char *base, char *out, size_t size)
{
	snprintf(out, size, "%s%s/%s.prompt", pfs.opts->mountpoint,
		 strcmp(dir_path, "/") ? dir_path : "", base);
}

void audit_write_job_line(struct job_facts *f)
{
	const json_t *usage = json_object_get(f->meta, "usage");
	const json_t *cost = json_object_get(f->meta, "cost_usd");
	const json_t *uid = json_object_get(f->meta, "uid");
	const json_t *pid = json_object_get(f->meta, "pid");
	struct audit_record r = {
		.time = f->time,
		.journal_id = f->id,
		.submitted = json_string_value(json_object_get(f->meta, "submitted")),
		.outcome = f->outcome,
		.uid = json_is_integer(uid) ? json_integer_value(uid) : -1,
		.pid = json_is_integer(pid) ? json_integer_value(pid) : -1,
		.route = json_string_value(json_object_get(f->meta, "route")),
		.attempts = json_object_get(f->meta, "attempts"),
		.has_tokens = json_is_object(usage),
		.input_tokens = json_integer_value(json_object_get(usage, "input_tokens")),
		.output_tokens = json_integer_value(json_object_get(usage, "output_tokens")),
		.has_cost = json_is_number(cost),
		.cost_usd = json_number_value(cost),
		.prompt_sha256 = json_string_value(json_object_get(f->meta, "prompt_sha256")),
	};
	char dir_path[PATH_MAX], path[PATH_MAX + 512], response_sha[65], *reason = NULL;
	int want_text = f->want_text, prompt_fd = -1;

	if (f->dir && node_path(f->dir, dir_path, sizeof(dir_path)) >= 0)
		mount_path(dir_path, f->base, path, sizeof(path));
	else if (f->path)
		snprintf(path, sizeof(path), "%s", f->path);
	else
		mount_path(f->dir_path ? f->dir_path : "/?", f->base, path, sizeof(path));
	r.path = path;
	if (f->error && strcmp(f->outcome, "failed") == 0) {
		reason = strndup(f->error, strcspn(f->error, "\n"));
		r.reason = reason;
	}
	if (f->response.present && text_sha256(&f->response, response_sha) == 0)
		r.response_sha256 = response_sha;
	else
		f->response.present = 0;
	if (want_text < 0)
		want_text = policy_wants_text(f->dir);
	if (want_text && !f->prompt.present) {
		/* not kept: the file, if it still holds the text submitted */
		prompt_fd = open_prompt_as(f->dir, f->base, r.prompt_sha256);
		f->prompt = (struct text){ .present = prompt_fd >= 0, .fd = prompt_fd };
	}
	write_line(&r, want_text, &f->prompt, &f->response);
	if (prompt_fd >= 0)
		close(prompt_fd);
	free(reason);
}

/* ---- the process behind a request ---- */

struct request_ctx {
	int active;
	long long uid, pid;
	/* a refusal noted during the request */
	struct node *dir; /* referenced */
	char *path;
	char *reason;
};
static _Thread_local struct request_ctx request;

void audit_request_begin(fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	memset(&request, 0, sizeof(request));
	request.active = 1;
	request.uid = ctx->uid;
	/* the thread's id as the kernel gives it; 0 when the caller is in a
	 * pid namespace the daemon cannot see into */
	request.pid = ctx->pid > 0 ? ctx->pid : -1;
}

static void write_refusal(struct request_ctx *q, int rc, int prompt_fd)
{
	struct audit_record r = {
		.journal_id = 0,
		.outcome = "refused",
		.errno_name = rc < 0 ? strerrorname_np(-rc) : NULL,
		.reason = q->reason,
		.uid = q->active ? q->uid : -1,
		.pid = q->active ? q->pid : -1,
		.path = q->path,
	};
	struct text prompt = { .fd = prompt_fd }, none = { 0 };
	char time[AUDIT_TIME_SIZE], sha[65];
	struct stat st;

	audit_now(time);
	r.time = time;
	/* the bytes refused at close() or rename(): a refusal at open()
	 * has none, and one past every size limit is not read */
	if (prompt_fd >= 0 && fstat(prompt_fd, &st) == 0 &&
	    (size_t)st.st_size <= pfs.opts->max_prompt_bytes && text_sha256(&prompt, sha) == 0) {
		r.prompt_sha256 = sha;
		prompt.present = 1;
	}
	write_line(&r, policy_wants_text(q->dir), &prompt, &none);
}

static void request_clear(struct request_ctx *q)
{
	if (q->dir)
		node_put(q->dir);
	free(q->path);
	free(q->reason);
	q->dir = NULL;
	q->path = q->reason = NULL;
}

void audit_refusal(struct node *dir, const char *base, const char *reason)
{
	char dir_path[PATH_MAX], path[PATH_MAX + 512];

	if (request.reason) /* a second refusal in one request: the first is written now */
		write_refusal(&request, 0, -1);
	request_clear(&request);
	if (node_path(dir, dir_path, sizeof(dir_path)) < 0)
		snprintf(dir_path, sizeof(dir_path), "/?");
	mount_path(dir_path, base, path, sizeof(path));
	node_hold(dir);
	request.dir = dir;
	request.path = strdup(path);
	request.reason = strdup(reason);
	if (!request.active) {
		/* not from a request: written at once, the errno not known */
		if (request.path && request.reason)
			write_refusal(&request, 0, -1);
		request_clear(&request);
	}
}

int audit_request_end(int rc, int prompt_fd)
{
	if (request.reason && request.path)
		write_refusal(&request, rc, prompt_fd);
	request_clear(&request);
	request.active = 0;
	return rc;
}

/* ---- what jobs tell it ---- */

void audit_job_submitted(struct job *job, const struct effective_policy *p, const char *prompt,
			 size_t len)
{
	struct audit_job *a = calloc(1, sizeof(*a));
	char dir_path[PATH_MAX], path[PATH_MAX + 512];

	if (request.active && request.pid >= 0)
		json_object_set_new(job->meta, "pid", json_integer(request.pid));
	if (!a)
		return; /* its line is written as for a job resumed */
	if (node_path(job->dir, dir_path, sizeof(dir_path)) >= 0) {
		mount_path(dir_path, job->base, path, sizeof(path));
		a->path = strdup(path);
	}
	a->want_text = p->audit_prompts;
	if (a->want_text) {
		a->prompt = malloc(len ? len : 1);
		if (a->prompt) {
			memcpy(a->prompt, prompt, len);
			a->prompt_len = len;
		}
	}
	job->audit = a;
}

void audit_job_release(struct job *job)
{
	if (job->audit) {
		free(job->audit->prompt);
		free(job->audit->path);
	}
	free(job->audit);
	job->audit = NULL;
}

static void facts_from_job(struct job_facts *f, struct job *job)
{
	f->dir = job->dir;
	f->base = job->base;
	f->want_text = job->audit ? job->audit->want_text : -1;
	f->path = job->audit ? job->audit->path : NULL;
	if (job->audit && job->audit->prompt)
		f->prompt = (struct text){ .present = 1,
					   .data = job->audit->prompt,
					   .len = job->audit->prompt_len,
					   .fd = -1 };
}

void audit_job_cancelled(struct job *job)
{
	struct job_facts f = { 0 };
	char time[AUDIT_TIME_SIZE];
	json_t *meta = NULL;

	pthread_mutex_lock(&jobs_lock);
	/* cancelled by this supersede; one whose end is recorded has its
	 * line from the writer */
	if (!job->end_recorded && job->status == JOB_CANCELLED) {
		meta = json_deep_copy(job->meta);
		f.id = job->journal_id;
	}
	pthread_mutex_unlock(&jobs_lock);
	if (!meta)
		return;
	audit_now(time);
	facts_from_job(&f, job);
	f.meta = meta;
	f.outcome = "cancelled";
	f.time = time;
	audit_write_job_line(&f);
	json_decref(meta);
}

void audit_job_ended(struct job *job, const json_t *meta, int recorded)
{
	struct job_facts f = { 0 };
	char time[AUDIT_TIME_SIZE];
	char *error;

	if (!recorded)
		return;
	if (!meta) {
		log_error("audit: out of memory: the line of job %s.prompt is lost", job->base);
		return;
	}
	pthread_mutex_lock(&jobs_lock);
	error = job->end_error ? strdup(job->end_error) : NULL;
	f.id = job->journal_id;
	pthread_mutex_unlock(&jobs_lock);
	facts_from_job(&f, job);
	f.meta = meta;
	f.outcome = json_string_value(json_object_get(meta, "status")) ?: "failed";
	f.time = json_string_value(json_object_get(meta, "finished"));
	if (!f.time) {
		audit_now(time);
		f.time = time;
	}
	f.error = error;
	/* the answer readers got: read back from the response file, never
	 * whole in memory */
	if (!strcmp(f.outcome, "done"))
		f.response = (struct text){ .present = 1, .fd = job->response_fd };
	audit_write_job_line(&f);
	free(error);
}

/* ---- checkpoints ---- */

void audit_checkpoint_cut(void)
{
	pthread_mutex_lock(&audit_lock);
	flush_pending_locked();
	/* the file lines go to now, and its size: the next mount looks for
	 * missing lines from there on */
	if (audit_fd >= 0)
		cut_known = fstat(audit_fd, &cut_stat) == 0;
	else
		cut_known = fstatat(pfs.state_fd, AUDIT_FILE, &cut_stat, AT_SYMLINK_NOFOLLOW) == 0;
	pthread_mutex_unlock(&audit_lock);
}

void audit_checkpoint_done(int dropped)
{
	char text[96];
	int n;

	if (!dropped)
		return; /* the old records stay, and so does the old mark */
	pthread_mutex_lock(&audit_lock);
	n = snprintf(text, sizeof(text), "%llu %llu %lld\n",
		     cut_known ? (unsigned long long)cut_stat.st_dev : 0ULL,
		     cut_known ? (unsigned long long)cut_stat.st_ino : 0ULL,
		     cut_known ? (long long)cut_stat.st_size : 0LL);
	pthread_mutex_unlock(&audit_lock);
	/* no flush of its own: lost, the previous one (or none) makes the
	 * next mount look at more of the file, never at less */
	if (state_write_file(pfs.state_fd, AUDIT_MARK, text, (size_t)n, 0600, geteuid(), getegid(),
			     0) < 0)
		log_warn("audit: cannot note the checkpoint in %s", AUDIT_MARK);
}

/* ---- the file ---- */

void audit_reopen(void)
{
	pthread_mutex_lock(&audit_lock);
	if (audit_fd >= 0)
		close(audit_fd);
	audit_fd = -1;
	flush_pending_locked();
	pthread_mutex_unlock(&audit_lock);
}

void audit_close(void)
{
	pthread_mutex_lock(&audit_lock);
	if (flush_pending_locked() < 0)
		log_error("audit: %zu bytes of lines could not be written to %s", pending_bytes,
			  AUDIT_FILE);
	while (pending_head) {
		struct pending_line *p = pending_head;

		pending_head = p->next;
		free(p->text);
		free(p);
	}
	pending_tail = &pending_head;
	pending_bytes = 0;
	if (audit_fd >= 0)
		close(audit_fd);
	audit_fd = -1;
	pthread_mutex_unlock(&audit_lock);
}
