/* The model and price catalog (SPEC §3.3): which models each provider
 * offers, their family, price and context window. The built-in one is
 * compiled in; catalog=FILE replaces it. */
#ifndef PROMPTFS_CATALOG_H
#define PROMPTFS_CATALOG_H

#include <stddef.h>

#include "mountopts/config.h"

struct catalog_entry {
	enum provider provider;
	char *id;
	char *family;
	double input_per_mtok; /* USD per million tokens */
	double output_per_mtok;
	long context_window; /* tokens */
};

struct catalog {
	struct catalog_entry *entries;
	size_t n_entries;
};

/* The built-in catalog as JSON text (static, never freed). */
extern const char catalog_builtin_json[];

/* Loads the catalog at PATH, or the built-in one when PATH is NULL.
 * Returns 0 and a new catalog in *OUT (caller frees with catalog_free),
 * or -errno with "FILE: JSON.PATH: reason" in ERR. */
int catalog_load(const char *path, struct catalog **out, char err[CONFIG_ERROR_MAX]);

/* Parses catalog JSON text; FILE only names it in messages. Same
 * contract as catalog_load(). */
int catalog_parse(const char *file, const char *text, size_t len, struct catalog **out,
		  char err[CONFIG_ERROR_MAX]);

void catalog_free(struct catalog *cat);

/* Finds the entry for ID of PROVIDER, borrowed from CAT; NULL if none.
 * A Bedrock cross-region profile ("eu.anthropic...") falls back to the
 * model it routes to, which is priced the same. */
const struct catalog_entry *catalog_find(const struct catalog *cat, enum provider provider,
					 const char *id);

#endif
