/* The lines a crash lost, written again at mount (see audit.h): the
 * journal's replay says which jobs ended or were cancelled since the last
 * checkpoint; those whose line is not in audit.jsonl from where that
 * checkpoint found it on get it now, once. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/audit.h"
#include "fs/audit_internal.h"
#include "fs/log.h"
#include "fs/promptfs.h"
#include "fs/replay_place.h"

/* Read this much at a time when looking for lines. */
#define SCAN_CHUNK (64 * 1024)
/* A line's key is in its first bytes (audit_line_key). */
#define KEY_BYTES 160

/* What the records say of each job, by id: { "job": its latest record,
 * "path": its directory now, "end": its end record, "cancelled": no end
 * and removed or replaced, "replaced": its files are no longer its own
 * (another job took its name, or it was removed) }. */
static json_t *replayed;
static json_t *replayed_places; /* "PATH\nNAME" → id */

static void replay_job(json_t *rec, const char *id)
{
	const char *path = json_string_value(json_object_get(rec, "dir"));
	const char *base = json_string_value(json_object_get(rec, "base"));
	json_t *entry = json_object_get(replayed, id), *other;
	const char *other_id;
	char *key;

	if (!path || !base)
		return;
	key = replay_place_key(path, base);
	if (!key)
		return;
	other_id = json_string_value(json_object_get(replayed_places, key));
	other = other_id && strcmp(other_id, id) ? json_object_get(replayed, other_id) : NULL;
	if (other) {
		/* a new job of that name: the old one was replaced */
		json_object_set_new(other, "replaced", json_true());
		if (!json_object_get(other, "end"))
			json_object_set_new(other, "cancelled", json_true());
	}
	if (entry && strcmp(json_string_value(json_object_get(entry, "path")) ?: "", path)) {
		/* moved since its last record: its old place is free */
		char *old_key = replay_place_key(
			json_string_value(json_object_get(entry, "path")) ?: "", base);

		if (old_key &&
		    !strcmp(json_string_value(json_object_get(replayed_places, old_key)) ?: "", id))
			json_object_del(replayed_places, old_key);
		free(old_key);
	}
	if (!entry) {
		entry = json_object();
		json_object_set_new(replayed, id, entry);
	}
	if (entry) {
		/* a checkpoint's copy of the same job says where it is now */
		json_object_set(entry, "job", rec);
		json_object_set_new(entry, "path", json_string(path));
		json_object_set_new(replayed_places, key, json_string(id));
	}
	free(key);
}

static void replay_move(const json_t *rec)
{
	const char *from = json_string_value(json_object_get(rec, "from"));
	const char *to = json_string_value(json_object_get(rec, "to"));
	int exchange = json_is_true(json_object_get(rec, "exchange"));
	const char *id;
	json_t *entry;

	if (!from || !to)
		return;
	json_object_foreach (replayed, id, entry) {
		const char *path = json_string_value(json_object_get(entry, "path"));
		char *now = replay_path_after_move(path, from, to, exchange);
		char *old_key, *new_key;

		if (!now)
			continue;
		old_key = replay_place_key(path, replay_entry_base(entry));
		new_key = replay_place_key(now, replay_entry_base(entry));
		if (old_key && new_key &&
		    !strcmp(json_string_value(json_object_get(replayed_places, old_key)) ?: "",
			    id)) {
			json_object_del(replayed_places, old_key);
			json_object_set_new(replayed_places, new_key, json_string(id));
		}
		json_object_set_new(entry, "path", json_string(now));
		free(old_key);
		free(new_key);
		free(now);
	}
}

void audit_replay_record(json_t *record)
{
	const char *type = json_string_value(json_object_get(record, "t"));
	json_int_t n = json_integer_value(json_object_get(record, "id"));
	json_t *entry;
	char id[32];

	if (!type)
		return;
	if (!replayed) {
		replayed = json_object();
		replayed_places = json_object();
	}
	if (!replayed || !replayed_places)
		return;
	snprintf(id, sizeof(id), "%" PRIu64, (uint64_t)n);
	entry = json_object_get(replayed, id);
	if (!strcmp(type, "job")) {
		replay_job(record, id);
	} else if (!strcmp(type, "end") && entry) {
		json_object_set(entry, "end", record);
		json_object_del(entry, "cancelled");
	} else if (!strcmp(type, "cancel") && entry) {
		/* removed: its files went with it */
		json_object_set_new(entry, "replaced", json_true());
		if (!json_object_get(entry, "end"))
			json_object_set_new(entry, "cancelled", json_true());
	} else if (!strcmp(type, "move")) {
		replay_move(record);
	}
}

/* "ID\nSUBMITTED": a line's key, and a replayed job's. */
static char *line_key(uint64_t id, const char *submitted)
{
	char *key = NULL;

	if (asprintf(&key, "%" PRIu64 "\n%s", id, submitted ? submitted : "") < 0)
		return NULL;
	return key;
}

/* Cuts a last line a crash left without its newline (its job's line is
 * written again from the journal). FD is open for reading and writing. */
static void cut_torn_tail(int fd, off_t size)
{
	char buf[4096];
	off_t end = size;

	while (end > 0) {
		size_t n = end < (off_t)sizeof(buf) ? (size_t)end : sizeof(buf);
		ssize_t got = pread(fd, buf, n, end - (off_t)n);

		if (got != (ssize_t)n)
			return;
		if (end == size && buf[n - 1] == '\n')
			return; /* whole */
		for (size_t i = n; i > 0; i--) {
			if (buf[i - 1] == '\n') {
				end = end - (off_t)n + (off_t)i;
				goto cut;
			}
		}
		end -= (off_t)n;
	}
cut:
	if (ftruncate(fd, end) == 0)
		log_warn("audit: %s: cut a line a crash left unfinished (%lld bytes)", AUDIT_FILE,
			 (long long)(size - end));
}

/* Where the search for missing lines begins in the file FD (status ST):
 * the size at the last checkpoint's cut, when that is this file. */
static off_t window_start(const struct stat *st)
{
	unsigned long long dev, ino;
	long long offset;
	char text[128];
	ssize_t n = -1;
	int fd = openat(pfs.state_fd, AUDIT_MARK, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

	if (fd >= 0) {
		n = read(fd, text, sizeof(text) - 1);
		close(fd);
	}
	if (n <= 0)
		return 0;
	text[n] = '\0';
	if (sscanf(text, "%llu %llu %lld", &dev, &ino, &offset) != 3 || dev != st->st_dev ||
	    ino != st->st_ino || offset < 0 || offset > st->st_size)
		return 0; /* another file (rotated, copied and truncated): all of it */
	return (off_t)offset;
}

/* Removes from WANTED (key → id) every key that a line of FD from START
 * on has. */
static void strike_written(int fd, off_t start, json_t *wanted)
{
	char *buf = malloc(SCAN_CHUNK), key[KEY_BYTES];
	size_t key_len = 0; /* of the current line's first bytes */
	off_t off = start;
	ssize_t n;

	while (buf && json_object_size(wanted) > 0 && (n = pread(fd, buf, SCAN_CHUNK, off)) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			char submitted[AUDIT_TIME_SIZE];
			uint64_t id;
			char *k;

			if (buf[i] != '\n') {
				if (key_len < sizeof(key))
					key[key_len++] = buf[i];
				continue;
			}
			if (audit_line_key(key, key_len, &id, submitted) == 0 && id) {
				k = line_key(id, submitted);
				if (k)
					json_object_del(wanted, k);
				free(k);
			}
			key_len = 0;
		}
		off += n;
	}
	free(buf);
}

static void replay_write_line(json_t *entry, uint64_t id)
{
	json_t *job = json_object_get(entry, "job"), *end = json_object_get(entry, "end");
	json_t *prompt = json_object_get(job, "prompt"),
	       *response = json_object_get(end, "response");
	const char *path = json_string_value(json_object_get(entry, "path"));
	struct job_facts f = {
		.dir_path = path,
		.base = replay_entry_base(entry),
		.id = id,
		.want_text = -1,
	};
	int current = !json_is_true(json_object_get(entry, "replaced"));
	int response_fd = -1;
	char time[AUDIT_TIME_SIZE];

	if (!path || !f.base)
		return;
	f.dir = node_at_path(path);
	if (json_is_string(prompt))
		f.prompt = (struct text){ .present = 1,
					  .data = json_string_value(prompt),
					  .len = json_string_length(prompt),
					  .fd = -1 };
	if (end) {
		f.meta = json_object_get(end, "meta");
		f.outcome = json_string_value(json_object_get(f.meta, "status")) ?: "failed";
		f.time = json_string_value(json_object_get(f.meta, "finished"));
		f.error = json_string_value(json_object_get(end, "error"));
	} else {
		audit_now(time);
		f.meta = json_object_get(job, "meta");
		f.outcome = "cancelled";
		f.time = time;
	}
	if (end && !strcmp(f.outcome, "done")) {
		if (json_is_string(response)) {
			f.response = (struct text){ .present = 1,
						    .data = json_string_value(response),
						    .len = json_string_length(response),
						    .fd = -1 };
		} else if (current && f.dir) {
			/* a large answer, fsync'd before its end record */
			response_fd = audit_open_job_file(f.dir, f.base, ".response");
			f.response =
				(struct text){ .present = response_fd >= 0, .fd = response_fd };
		}
	}
	if (!f.time) {
		audit_now(time);
		f.time = time;
	}
	audit_write_job_line(&f);
	if (response_fd >= 0)
		close(response_fd);
	if (f.dir)
		node_put(f.dir);
}

void audit_replay_finish(void)
{
	json_t *wanted = json_object(); /* line key → id, of lines that must exist */
	const char *id, *key;
	json_t *entry, *value;
	struct stat st;
	int fd, written = 0;

	json_object_foreach (replayed, id, entry) {
		json_t *meta = json_object_get(json_object_get(entry, "job"), "meta");
		uint64_t n = strtoull(id, NULL, 10);
		char *k;

		if (!json_object_get(entry, "end") &&
		    !json_is_true(json_object_get(entry, "cancelled")))
			continue; /* unfinished: resumed, and its line comes at its end */
		k = line_key(n, json_string_value(json_object_get(meta, "submitted")));
		if (k && wanted)
			json_object_set_new(wanted, k, json_string(id));
		free(k);
	}
	fd = openat(pfs.state_fd, AUDIT_FILE, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
		cut_torn_tail(fd, st.st_size);
		if (fstat(fd, &st) == 0 && wanted)
			strike_written(fd, window_start(&st), wanted);
	}
	if (fd >= 0)
		close(fd);
	/* in the order the journal shows the jobs */
	json_object_foreach (wanted, key, value) {
		entry = json_object_get(replayed, json_string_value(value));
		replay_write_line(entry, strtoull(json_string_value(value), NULL, 10));
		written++;
	}
	if (written)
		log_info("audit: %d line(s) a crash had lost written again from the journal",
			 written);
	json_decref(wanted);
	json_decref(replayed);
	json_decref(replayed_places);
	replayed = replayed_places = NULL;
}
