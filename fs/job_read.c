/* Reading a .response while its job runs: reads that find no new bytes
 * are parked (no thread waits) and answered by whoever appends bytes or
 * ends the job; interrupts answer them EINTR. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/metrics.h"
#include "fs/job_internal.h"
#include "fs/log.h"

/* Every parked read, across jobs, so an interrupt can find its request. */
static struct parked_read *all_parked;

static void park(struct job *job, struct parked_read *e)
{
	e->prev = NULL;
	e->next = job->parked;
	if (job->parked)
		job->parked->prev = e;
	job->parked = e;
	e->prev_all = NULL;
	e->next_all = all_parked;
	if (all_parked)
		all_parked->prev_all = e;
	all_parked = e;
	metrics_parked_readers_add(1);
}

static void unpark(struct job *job, struct parked_read *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		job->parked = e->next;
	if (e->next)
		e->next->prev = e->prev;
	if (e->prev_all)
		e->prev_all->next_all = e->next_all;
	else
		all_parked = e->next_all;
	if (e->next_all)
		e->next_all->prev_all = e->prev_all;
	metrics_parked_readers_add(-1);
}

/* What a read at OFF gets now: 1 with OUT filled, or 0 to wait. Called
 * with jobs_lock held. */
static int decide_read(struct response_reader *r, size_t size, off_t off, struct pending_reply *out)
{
	struct job *job = r->job;
	unsigned long long available;
	ssize_t got;

	out->error = 0;
	out->data = NULL;
	out->len = 0;
	if (r->generation != job->generation) {
		/* this reader saw bytes of an attempt that was thrown away */
		if (r->delivered > 0) {
			out->error = EIO;
			return 1;
		}
		r->generation = job->generation;
	}
	if (off < 0) {
		out->error = EINVAL;
		return 1;
	}
	if ((unsigned long long)off < job->size) {
		available = job->size - (unsigned long long)off;
		if (available < size)
			size = (size_t)available;
		out->data = malloc(size);
		if (!out->data) {
			out->error = ENOMEM;
			return 1;
		}
		got = pread(job->response_fd, out->data, size, off);
		if (got <= 0) {
			free(out->data);
			out->data = NULL;
			out->error = EIO;
			return 1;
		}
		out->len = (size_t)got;
		r->delivered += (unsigned long long)got;
		return 1;
	}
	switch (job->status) {
	case JOB_DONE:
		return 1; /* end of file: the answer is complete */
	case JOB_FAILED:
	case JOB_CANCELLED:
		out->error = EIO;
		return 1;
	default:
		return 0;
	}
}

static void send_reply(fuse_req_t req, const struct pending_reply *reply)
{
	if (reply->error)
		fuse_reply_err(req, reply->error);
	else
		fuse_reply_buf(req, reply->data, reply->len);
}

static int wakeups_add_poll(struct wakeups *w, struct fuse_pollhandle *ph)
{
	if (w->n_polls == w->cap_polls) {
		size_t cap = w->cap_polls ? w->cap_polls * 2 : 8;
		struct fuse_pollhandle **grown = realloc(w->polls, cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		w->polls = grown;
		w->cap_polls = cap;
	}
	w->polls[w->n_polls++] = ph;
	return 0;
}

/* The kernel may keep a .response's attributes (fs/ops_tree.c): told
 * here, under jobs_lock, that its size or state changed, before any
 * reader can be answered from the new state, so that no reader that got
 * bytes or the end can then stat an older size. */
static void response_attrs_changed(struct job *job)
{
	char name[NAME_MAX + 1];
	struct node *n;

	if (snprintf(name, sizeof(name), "%s.response", job->base) >= (int)sizeof(name))
		return;
	n = node_find_file(job->dir, name);
	if (n) {
		node_attrs_changed(n);
		node_put(n);
	}
}

void job_wake_readers(struct job *job, struct wakeups *w)
{
	struct parked_read *p = job->parked;

	response_attrs_changed(job);

	while (p) {
		struct parked_read *next = p->next;
		struct pending_reply *reply = malloc(sizeof(*reply));

		if (reply && decide_read(p->reader, p->size, p->off, reply)) {
			unpark(job, p);
			reply->req = p->req;
			reply->next = w->replies;
			w->replies = reply;
			free(p);
		} else {
			free(reply);
		}
		p = next;
	}
	while (job->pollers) {
		struct response_reader *r = job->pollers;

		job->pollers = r->next_poller;
		r->next_poller = NULL;
		r->polling = 0;
		if (r->poll_handle && wakeups_add_poll(w, r->poll_handle) == 0)
			r->poll_handle = NULL;
	}
}

void wakeups_deliver(struct wakeups *w)
{
	while (w->replies) {
		struct pending_reply *reply = w->replies;

		w->replies = reply->next;
		send_reply(reply->req, reply);
		free(reply->data);
		free(reply);
	}
	for (size_t i = 0; i < w->n_polls; i++) {
		fuse_lowlevel_notify_poll(w->polls[i]);
		fuse_pollhandle_destroy(w->polls[i]);
	}
	free(w->polls);
	w->polls = NULL;
	w->n_polls = w->cap_polls = 0;
}

/* Called by libfuse when the reader got a signal (Ctrl-C on cat). The
 * request is looked up rather than trusted through DATA: it may have
 * been answered, and its parking freed, a moment ago. */
static void on_interrupt(fuse_req_t req, void *data)
{
	struct parked_read *e;
	int found = 0;

	(void)data;
	pthread_mutex_lock(&jobs_lock);
	for (e = all_parked; e; e = e->next_all) {
		if (e->req == req) {
			unpark(e->reader->job, e);
			found = 1;
			break;
		}
	}
	pthread_mutex_unlock(&jobs_lock);
	if (found) {
		fuse_reply_err(req, EINTR);
		free(e);
	}
}

static void read_finished_file(fuse_req_t req, struct response_reader *r, size_t size, off_t off)
{
	char *buf;
	ssize_t got;

	if (r->failed) {
		fuse_reply_err(req, EIO);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	got = pread(r->fd, buf, size, off);
	if (got < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_buf(req, buf, (size_t)got);
	free(buf);
}

void job_response_read(fuse_req_t req, struct response_reader *r, size_t size, off_t off,
		       int nonblock)
{
	struct pending_reply reply;
	struct parked_read *e;
	char name[NAME_MAX + 1];

	if (!r->job) {
		read_finished_file(req, r, size, off);
		return;
	}
	/* Registered before parking: once parked, another thread may answer
	 * and free REQ at any moment. */
	fuse_req_interrupt_func(req, on_interrupt, NULL);
	pthread_mutex_lock(&jobs_lock);
	if (decide_read(r, size, off, &reply)) {
		pthread_mutex_unlock(&jobs_lock);
		send_reply(req, &reply);
		free(reply.data);
		return;
	}
	if (nonblock) {
		pthread_mutex_unlock(&jobs_lock);
		fuse_reply_err(req, EAGAIN);
		return;
	}
	if (fuse_req_interrupted(req)) {
		pthread_mutex_unlock(&jobs_lock);
		fuse_reply_err(req, EINTR);
		return;
	}
	e = calloc(1, sizeof(*e));
	if (!e) {
		pthread_mutex_unlock(&jobs_lock);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	e->req = req;
	e->reader = r;
	e->size = size;
	e->off = off;
	park(r->job, e);
	/* copied under the lock: once it is released, the read may be
	 * answered and its file closed at any moment */
	snprintf(name, sizeof(name), "%s", r->job->base);
	pthread_mutex_unlock(&jobs_lock);
	log_debug("read parked on %s.response", name);
}

static int reader_readable_locked(const struct response_reader *r)
{
	const struct job *job = r->job;

	if (job->status != JOB_QUEUED && job->status != JOB_RUNNING)
		return 1;
	if (r->generation != job->generation && r->delivered > 0)
		return 1;
	return job->size > r->delivered;
}

void job_response_poll(fuse_req_t req, struct response_reader *r, struct fuse_pollhandle *ph)
{
	struct fuse_pollhandle *old = NULL;
	int readable;

	if (!r->job) {
		if (ph)
			fuse_pollhandle_destroy(ph);
		fuse_reply_poll(req, POLLIN | POLLRDNORM);
		return;
	}
	pthread_mutex_lock(&jobs_lock);
	readable = reader_readable_locked(r);
	if (ph) {
		old = r->poll_handle;
		r->poll_handle = ph;
		if (!r->polling) {
			r->polling = 1;
			r->next_poller = r->job->pollers;
			r->job->pollers = r;
		}
	}
	pthread_mutex_unlock(&jobs_lock);
	if (old)
		fuse_pollhandle_destroy(old);
	fuse_reply_poll(req, readable ? POLLIN | POLLRDNORM : 0);
}

int job_is_live(struct node *dir, const char *name)
{
	char *base = name_job_base(name);
	int live;

	if (!base)
		return 0;
	pthread_mutex_lock(&jobs_lock);
	live = job_lookup_locked(dir, base) != NULL;
	pthread_mutex_unlock(&jobs_lock);
	free(base);
	return live;
}

void job_response_close(struct response_reader *r)
{
	struct fuse_pollhandle *ph = NULL;

	if (r->job) {
		pthread_mutex_lock(&jobs_lock);
		if (r->polling) {
			struct response_reader **pp = &r->job->pollers;

			while (*pp && *pp != r)
				pp = &(*pp)->next_poller;
			if (*pp)
				*pp = r->next_poller;
			r->polling = 0;
		}
		ph = r->poll_handle;
		r->poll_handle = NULL;
		pthread_mutex_unlock(&jobs_lock);
		job_put(r->job);
		r->job = NULL;
	}
	if (ph)
		fuse_pollhandle_destroy(ph);
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
}
