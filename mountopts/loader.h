/* Shared plumbing of the config, credential and catalog readers: the
 * error sentence ("FILE: JSON.PATH: reason"), key checks and file-name
 * rules. Internal to mountopts/. */
#ifndef PROMPTFS_LOADER_H
#define PROMPTFS_LOADER_H

#include <stddef.h>
#include <sys/types.h>
#include <jansson.h>

#include "mountopts/config.h"

/* Long enough for three names of 255 bytes plus the keys between them. */
#define JSON_PATH_MAX 1024

struct catalog;

/* What every reader needs to know about the file being read. */
struct load_ctx {
	const char *file;   /* as named in messages */
	char *dir;	    /* relative paths resolve here; owned */
	int have_file_mode; /* 0: no file (environment) */
	mode_t file_mode;
	const struct catalog *catalog; /* borrowed */
	char *err;		       /* CONFIG_ERROR_MAX bytes, borrowed */
	/* Set by config_check (--check): every error is recorded here and
	 * reading goes on (load_recover), and a secret that is not here is
	 * no error (load_secret_absent). NULL: the first error ends it. */
	struct config_report *report; /* borrowed */
};

/* Writes "FILE: PATH: reason" into ctx->err (PATH may be NULL or "")
 * and returns RC, so callers can write rc = load_error(...). */
int load_error(struct load_ctx *ctx, int rc, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* What a reader does after a step that returned RC: in check mode an
 * invalid value has been recorded and reading goes on with the next one
 * (0 is returned); otherwise, and for running out of memory, RC is
 * returned and ends the reading. */
int load_recover(struct load_ctx *ctx, int rc);

/* Appends a copy of MESSAGE to REPORT's errors (on allocation failure
 * it counts it in n_lost). */
void config_report_add(struct config_report *report, const char *message);

/* Called where a secret is not here (an environment variable unset, a
 * key file absent): returns 1 in check mode, which counts it and takes
 * it for no error (--check runs where the secrets may not be), else 0,
 * and the caller reports the error as usual. */
int load_secret_absent(struct load_ctx *ctx);

/* snprintf for text that may be cut short: messages and JSON paths are
 * bounded, and a cut one still reads. */
void format_into(char *buf, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Reports a jansson parse failure as "FILE: line L column C: text" and
 * returns -EINVAL (-ENOMEM when jansson ran out of memory). jansson's
 * " near '...'" tail is dropped: it quotes the file, and the file may hold
 * a secret. */
int load_syntax_error(struct load_ctx *ctx, const json_error_t *error);

/* Joins PARENT and KEY with a dot into OUT (JSON_PATH_MAX bytes). */
void json_path_join(char out[JSON_PATH_MAX], const char *parent, const char *key);

/* Fails with "PATH.KEY: unknown key" for the first key of OBJ that is
 * not in the NULL-terminated list ALLOWED (in check mode, for each). */
int check_keys(struct load_ctx *ctx, const char *path, json_t *obj, const char *const allowed[]);

/* Checks that NAME (LEN bytes, from a JSON key) may be a directory name. */
int check_file_name(struct load_ctx *ctx, const char *path, const char *name, size_t len);

/* Reads OBJ[KEY] as a non-empty string. Returns 1 and a new copy in *OUT
 * (caller frees), 0 if absent (*OUT untouched), or -errno. */
int json_take_string(struct load_ctx *ctx, const char *path, json_t *obj, const char *key,
		     char **out);

/* Reads OBJ[KEY], a required price (USD per million tokens): a number
 * >= 0. Returns 0 with it in *OUT, or -EINVAL. Shared by the config's
 * "price" objects and the catalog's entries. */
int json_take_price(struct load_ctx *ctx, const char *path, json_t *obj, const char *key,
		    double *out);

/* Returns a new string (caller frees): PATH itself when absolute or when
 * there is no directory to resolve against, else DIR/PATH. NULL: ENOMEM. */
char *resolve_path(const struct load_ctx *ctx, const char *path);

/* Reads the config file PATH into a new config in *OUT (caller frees
 * with config_free), as config_load() does, with ctx->catalog already
 * loaded; ctx->file must be PATH. Returns 0 or -errno with the sentence
 * in ctx->err; in check mode the errors are in ctx->report, and *OUT
 * may be set despite them. */
int config_read(struct load_ctx *ctx, const char *path, struct config **out);

/* Turns ROOT, a document in the SPEC §3.1 format, into a new config in
 * *OUT (caller frees with config_free), with ctx->catalog filling in
 * defaults. Returns 0 or -errno with the sentence in ctx->err. Shared by
 * config_load() and the embedded default, which builds such a document
 * from the environment. */
int config_from_json(struct load_ctx *ctx, json_t *root, struct config **out);

/* The residency tags of a provider's region, from a built-in table
 * (SPEC §3.4). Fills TAGS with static strings, or REGION itself, and
 * returns how many (1 or 2). A region the table does not know is tagged
 * with its own name, so that it never matches a policy asking for eu. */
size_t region_geo_tags(enum provider provider, const char *region, const char *tags[2]);

/* Whether a TCP connection to HOST:PORT opens within TIMEOUT_MS. Nothing
 * is sent. 1 yes, 0 no. */
int tcp_port_answers(const char *host, const char *port, int timeout_ms);

/* Frees a secret after overwriting it. NULL is fine. */
void secret_free(char *secret);

#endif
