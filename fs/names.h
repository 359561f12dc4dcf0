/* What a file's name makes it in a model's subtree (SPEC §4–§5). Pure
 * functions: no FUSE, no state. */
#ifndef PROMPTFS_NAMES_H
#define PROMPTFS_NAMES_H

enum file_role {
	ROLE_PLAIN,    /* stored as written, never sent anywhere */
	ROLE_PROMPT,   /* NAME.prompt */
	ROLE_RESPONSE, /* NAME.response, NAME.meta, NAME.error: made by jobs */
	ROLE_META,
	ROLE_ERROR,
};

/* The role of NAME; ".prompt" alone (empty NAME) is a plain file. */
enum file_role file_role_of(const char *name);

static inline int file_role_generated(enum file_role role)
{
	return role == ROLE_RESPONSE || role == ROLE_META || role == ROLE_ERROR;
}

/* NAME without SUFFIX, or NULL when NAME does not end in it (or is only
 * it). Caller frees. */
char *name_strip_suffix(const char *name, const char *suffix);

/* BASE followed by SUFFIX. Caller frees; NULL on allocation failure. */
char *name_with_suffix(const char *base, const char *suffix);

/* NAME of a job file of any role ("q" for "q.meta"); NULL for a plain
 * file. Caller frees. */
char *name_job_base(const char *name);

#endif
