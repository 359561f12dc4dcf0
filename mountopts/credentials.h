/* Reading credentials (SPEC §3.2): the `auth` object of a cloud, the
 * provider's defaults, secret files, the AWS shared credentials file
 * and Google service account keys. Internal to mountopts/. */
#ifndef PROMPTFS_CREDENTIALS_H
#define PROMPTFS_CREDENTIALS_H

#include <stddef.h>
#include <jansson.h>

#include "mountopts/config.h"
#include "mountopts/loader.h"

/* Fills cloud->credentials and cloud->auth_sources from AUTH (NULL or
 * empty: the provider's defaults). CLOUD_PATH is the cloud's JSON path;
 * the cloud's provider and regions must already be set. Returns 0 or
 * -errno with the sentence in ctx->err. What it filled in is released
 * by credentials_release() and auth_sources_free(), also on failure. */
int credentials_load(struct load_ctx *ctx, const char *cloud_path, json_t *auth,
		     struct cloud *cloud);

/* Overwrites every inline secret of ROOT, a §3.1 document, where jansson
 * keeps it: jansson frees without wiping. */
void wipe_inline_secrets(json_t *root);

/* Frees the secrets in CREDS (wiped first) and zeroes the struct. */
void credentials_release(struct credentials *creds);

void auth_sources_free(struct cloud *cloud);

/* Appends {KEY, VALUE} to cloud->auth_sources. 0 or -ENOMEM. */
int auth_source_add(struct cloud *cloud, const char *key, const char *value);

/* Reads the secret file FILE whole into a new buffer (caller wipes and
 * frees it with secret_free), refusing files that group or others may
 * read. Errors name PATH and start with PREFIX ("" for none). In check
 * mode a file this process cannot open is no error: 0 is returned with
 * *OUT NULL, after its mode was checked if stat() could see it. */
int secret_file_read(struct load_ctx *ctx, const char *path, const char *prefix, const char *file,
		     char **out, size_t *out_len);

/* Reads PROFILE from the AWS shared credentials FILE (INI) into CREDS.
 * Errors as for secret_file_read(); an absent file in check mode
 * leaves CREDS as they were. */
int aws_profile_read(struct load_ctx *ctx, const char *path, const char *prefix, const char *file,
		     const char *profile, struct credentials *creds);

/* Reads a Google service account key FILE into a new struct (caller
 * frees with service_account_free). *PROJECT_ID, when not NULL, gets a
 * new copy of the key's project_id or NULL (caller frees). An absent
 * file in check mode: 0 with *OUT NULL. */
int service_account_read(struct load_ctx *ctx, const char *path, const char *prefix,
			 const char *file, struct google_service_account **out, char **project_id);

void service_account_free(struct google_service_account *account);

/* Whether NAME may be an environment variable name; values that are not
 * are never echoed, since they may be a secret pasted in the wrong key. */
int is_env_name(const char *name);

#endif
