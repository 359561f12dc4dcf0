/* Google service account key files, as downloaded from the console. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mountopts/credentials.h"

#define GOOGLE_TOKEN_URI "https://oauth2.googleapis.com/token"

void service_account_free(struct google_service_account *account)
{
	if (!account)
		return;
	free(account->client_email);
	secret_free(account->private_key_pem);
	free(account->private_key_id);
	free(account->token_uri);
	free(account);
}

/* Copies the non-empty string KEY of ROOT into *OUT. 1 done, 0 absent or
 * not a non-empty string, -ENOMEM. */
static int copy_field(json_t *root, const char *key, char **out)
{
	json_t *value = json_object_get(root, key);

	if (!json_is_string(value) || json_string_length(value) == 0)
		return 0;
	*out = strdup(json_string_value(value));
	return *out ? 1 : -ENOMEM;
}

/* Wipes the private key where jansson keeps it, before jansson frees it
 * unwiped. */
static void wipe_private_key(json_t *root)
{
	json_t *value = json_object_get(root, "private_key");

	if (json_is_string(value))
		explicit_bzero((char *)json_string_value(value), json_string_length(value));
}

int service_account_read(struct load_ctx *ctx, const char *path, const char *prefix,
			 const char *file, struct google_service_account **out, char **project_id)
{
	static const char *const required[] = { "client_email", "private_key", "private_key_id",
						NULL };
	struct google_service_account *account = NULL;
	char **fields[3];
	json_error_t error;
	json_t *root = NULL;
	char *text = NULL;
	size_t len = 0, i;
	const char *type;
	int rc;

	*out = NULL;
	if (project_id)
		*project_id = NULL;
	rc = secret_file_read(ctx, path, prefix, file, &text, &len);
	if (rc < 0 || !text) /* !text: absent, in check mode */
		goto out;
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &error);
	if (!root) {
		/* Only the position: jansson's text may quote the key. */
		rc = load_error(ctx, -EINVAL, path, "%s%s: not valid JSON (line %d column %d)",
				prefix, file, error.line, error.column);
		goto out;
	}
	type = json_string_value(json_object_get(root, "type"));
	if (!type || strcmp(type, "service_account") != 0) {
		rc = load_error(
			ctx, -EINVAL, path,
			"%s%s: not a service account key (\"type\" is not \"service_account\")",
			prefix, file);
		goto out;
	}
	account = calloc(1, sizeof(*account));
	if (!account) {
		rc = load_error(ctx, -ENOMEM, NULL, "out of memory");
		goto out;
	}
	fields[0] = &account->client_email;
	fields[1] = &account->private_key_pem;
	fields[2] = &account->private_key_id;
	for (i = 0; required[i]; i++) {
		rc = copy_field(root, required[i], fields[i]);
		if (rc < 0) {
			rc = load_error(ctx, rc, NULL, "out of memory");
			goto out;
		}
		if (rc == 0) {
			rc = load_error(ctx, -EINVAL, path, "%s%s: \"%s\" is missing or empty",
					prefix, file, required[i]);
			goto out;
		}
	}
	rc = copy_field(root, "token_uri", &account->token_uri);
	if (rc == 0) {
		account->token_uri = strdup(GOOGLE_TOKEN_URI);
		rc = account->token_uri ? 1 : -ENOMEM;
	}
	if (rc >= 0 && project_id)
		rc = copy_field(root, "project_id", project_id);
	if (rc < 0) {
		rc = load_error(ctx, rc, NULL, "out of memory");
		goto out;
	}
	*out = account;
	account = NULL;
	rc = 0;
out:
	service_account_free(account);
	if (root) {
		wipe_private_key(root);
		json_decref(root);
	}
	if (text) {
		explicit_bzero(text, len);
		free(text);
	}
	return rc;
}
