/* What fs/audit.c (lines, the file, the hooks of jobs) and
 * fs/audit_replay.c (the lines a crash lost, written at mount) share. Not
 * for other files: they use audit.h. */
#ifndef PROMPTFS_AUDIT_INTERNAL_H
#define PROMPTFS_AUDIT_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "fs/audit_line.h"
#include "fs/node.h"

#define AUDIT_FILE "audit.jsonl"
/* "DEV INO OFFSET": the file and its size at the last checkpoint's cut */
#define AUDIT_MARK "audit.pos"

/* A text for a line: in memory, or a file read from its start. */
struct text {
	int present;
	const char *data;
	size_t len;
	int fd; /* >= 0: read from here instead of DATA */
};

/* What a job's line is made of. */
struct job_facts {
	struct node *dir;     /* where its prompt is now; NULL: gone */
	const char *dir_path; /* its path, when DIR is NULL */
	const char *path;     /* else the prompt's path at submission */
	const char *base;
	uint64_t id;
	const json_t *meta;
	const char *outcome;
	const char *time;
	const char *error;    /* .error's text: its first line is the reason */
	struct text prompt;   /* its text when it was kept */
	struct text response; /* the answer of a done job */
	int want_text;	      /* -1: as DIR's policy says now */
};

/* Now, as "2026-11-26T10:00:00Z". */
void audit_now(char out[AUDIT_TIME_SIZE]);
/* NAME.SUFFIX in DIR opened for reading, or -1. */
int audit_open_job_file(struct node *dir, const char *base, const char *suffix);
/* Writes the line F describes (its hashes and, as F says, texts). */
void audit_write_job_line(struct job_facts *f);

#endif
