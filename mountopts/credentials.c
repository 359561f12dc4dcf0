/* The `auth` object of a cloud and each provider's defaults (SPEC §3.2).
 *
 * A secret comes from one of three keys: NAME_env (an environment
 * variable), NAME_file (a file only its owner may read) or NAME inline
 * (only in a config file only its owner may read). Values that might be
 * secrets are never put into an error message. */
#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mountopts/credentials.h"

#define INLINE_SOURCE "(inline, hidden)"
#define OPENAI_DEFAULT_ENDPOINT "https://api.openai.com/v1"

static const char *const openai_auth_keys[] = { "api_key_env", "api_key_file", "api_key", NULL };
static const char *const azure_auth_keys[] = {
	"api_key_env",	     "api_key_file", "api_key", "bearer_token_env",
	"bearer_token_file", "bearer_token", NULL
};
static const char *const bedrock_auth_keys[] = { "access_key_id_env",
						 "secret_access_key_env",
						 "session_token_env",
						 "access_key_id",
						 "secret_access_key",
						 "session_token",
						 "credentials_file",
						 "profile",
						 NULL };
static const char *const vertex_auth_keys[] = { "service_account_file", "access_token_env",
						"access_token", NULL };

static const char *const *auth_keys_of(enum provider provider)
{
	switch (provider) {
	case PROVIDER_AZURE:
		return azure_auth_keys;
	case PROVIDER_BEDROCK:
		return bedrock_auth_keys;
	case PROVIDER_VERTEX:
		return vertex_auth_keys;
	case PROVIDER_OPENAI:
	case PROVIDER_ANTHROPIC:
		break;
	}
	return openai_auth_keys;
}

static int in_list(const char *const list[], const char *key)
{
	size_t i;

	for (i = 0; list[i]; i++) {
		if (strcmp(list[i], key) == 0)
			return 1;
	}
	return 0;
}

/* Unknown keys and keys that belong to another provider get different
 * sentences: the second is usually a provider typed wrong. */
static int check_auth_keys(struct load_ctx *ctx, const char *auth_path, json_t *auth,
			   enum provider provider)
{
	static const char *const *const every_provider[] = { openai_auth_keys, azure_auth_keys,
							     bedrock_auth_keys, vertex_auth_keys };
	const char *const *allowed = auth_keys_of(provider);
	char key_path[JSON_PATH_MAX];
	const char *key;
	json_t *value;
	size_t i;
	int rc = 0;

	json_object_foreach (auth, key, value) {
		int foreign = 0;

		if (in_list(allowed, key))
			continue;
		json_path_join(key_path, auth_path, key);
		for (i = 0; i < sizeof(every_provider) / sizeof(every_provider[0]); i++)
			foreign |= in_list(every_provider[i], key);
		if (foreign)
			rc = load_error(ctx, -EINVAL, key_path, "not an auth key for provider %s",
					provider_name(provider));
		else
			rc = load_error(ctx, -EINVAL, key_path, "unknown key");
		if (!ctx->report)
			break; /* in check mode, every key is named */
	}
	return rc;
}

int is_env_name(const char *name)
{
	size_t i;

	if (!name[0] || strlen(name) > 128 || (name[0] >= '0' && name[0] <= '9'))
		return 0;
	for (i = 0; name[i]; i++) {
		char c = name[i];

		if (!(c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		      (c >= '0' && c <= '9')))
			return 0;
	}
	return 1;
}

int auth_source_add(struct cloud *cloud, const char *key, const char *value)
{
	struct auth_source *grown;
	char *key_copy = strdup(key), *value_copy = strdup(value);
	int rc;

	if (!key_copy || !value_copy) {
		rc = -ENOMEM;
		goto out;
	}
	grown = realloc(cloud->auth_sources, (cloud->n_auth_sources + 1) * sizeof(*grown));
	if (!grown) {
		rc = -ENOMEM;
		goto out;
	}
	cloud->auth_sources = grown;
	grown[cloud->n_auth_sources].key = key_copy;
	grown[cloud->n_auth_sources].value = value_copy;
	cloud->n_auth_sources++;
	key_copy = NULL;
	value_copy = NULL;
	rc = 0;
out:
	free(value_copy);
	free(key_copy);
	return rc;
}

void auth_sources_free(struct cloud *cloud)
{
	size_t i;

	for (i = 0; i < cloud->n_auth_sources; i++) {
		free(cloud->auth_sources[i].key);
		free(cloud->auth_sources[i].value);
	}
	free(cloud->auth_sources);
	cloud->auth_sources = NULL;
	cloud->n_auth_sources = 0;
}

void wipe_inline_secrets(json_t *root)
{
	static const char *const inline_keys[] = { "api_key",
						   "bearer_token",
						   "access_key_id",
						   "secret_access_key",
						   "session_token",
						   "access_token",
						   NULL };
	json_t *cloud, *auth, *value;
	const char *name;
	size_t i;

	json_object_foreach (json_object_get(root, "clouds"), name, cloud) {
		auth = json_object_get(cloud, "auth");
		for (i = 0; inline_keys[i]; i++) {
			value = json_object_get(auth, inline_keys[i]);
			if (json_is_string(value))
				explicit_bzero((char *)json_string_value(value),
					       json_string_length(value));
		}
	}
}

void credentials_release(struct credentials *creds)
{
	secret_free(creds->api_key);
	secret_free(creds->bearer_token);
	secret_free(creds->aws_access_key_id);
	secret_free(creds->aws_secret_access_key);
	secret_free(creds->aws_session_token);
	service_account_free(creds->service_account);
	memset(creds, 0, sizeof(*creds));
}

static int out_of_memory(struct load_ctx *ctx)
{
	return load_error(ctx, -ENOMEM, NULL, "out of memory");
}

static int secret_from_env(struct load_ctx *ctx, const char *key_path, const char *var, char **dest)
{
	const char *value;

	if (!is_env_name(var))
		return load_error(ctx, -EINVAL, key_path, "not a valid environment variable name");
	value = getenv(var);
	if ((!value || !*value) && load_secret_absent(ctx))
		return 0;
	if (!value)
		return load_error(ctx, -EINVAL, key_path, "environment variable %s is not set",
				  var);
	if (!*value)
		return load_error(ctx, -EINVAL, key_path, "environment variable %s is empty", var);
	*dest = strdup(value);
	return *dest ? 0 : out_of_memory(ctx);
}

static int secret_from_file(struct load_ctx *ctx, const char *key_path, const char *file,
			    char **dest)
{
	char *text = NULL;
	size_t len = 0;
	int rc;

	rc = secret_file_read(ctx, key_path, "", file, &text, &len);
	if (rc < 0 || !text) /* !text: absent, in check mode */
		goto out;
	/* Editors end files with a newline that is not part of the key. */
	if (len > 0 && text[len - 1] == '\n')
		text[--len] = '\0';
	if (len > 0 && text[len - 1] == '\r')
		text[--len] = '\0';
	if (len == 0) {
		rc = load_error(ctx, -EINVAL, key_path, "%s is empty", file);
		goto out;
	}
	*dest = text;
	text = NULL;
out:
	secret_free(text);
	return rc;
}

static int inline_allowed(struct load_ctx *ctx, const char *key_path)
{
	if (ctx->have_file_mode && (ctx->file_mode & 077) == 0)
		return 0;
	if (!ctx->have_file_mode)
		return load_error(ctx, -EACCES, key_path,
				  "inline secrets are only accepted in a config file");
	return load_error(ctx, -EACCES, key_path,
			  "inline secret refused: %s is mode %04o; it must be 0600 or stricter",
			  ctx->file, (unsigned)(ctx->file_mode & 07777));
}

/* Reads the secret NAME from NAME_env, NAME_file or NAME. Returns 1 when
 * one was given, 0 when none, or -errno. */
static int read_slot(struct load_ctx *ctx, const char *auth_path, json_t *auth, const char *name,
		     struct cloud *cloud, char **dest)
{
	char env_key[64], file_key[64], key_path[JSON_PATH_MAX];
	const char *keys[3] = { env_key, file_key, name };
	const char *given = NULL, *source;
	char *file = NULL;
	json_t *value;
	size_t i;
	int rc;

	snprintf(env_key, sizeof(env_key), "%s_env", name);
	snprintf(file_key, sizeof(file_key), "%s_file", name);
	for (i = 0; i < 3; i++) {
		if (!json_object_get(auth, keys[i]))
			continue;
		if (given) {
			json_path_join(key_path, auth_path, keys[i]);
			return load_error(ctx, -EINVAL, key_path, "conflicts with %s.%s", auth_path,
					  given);
		}
		given = keys[i];
	}
	if (!given)
		return 0;

	json_path_join(key_path, auth_path, given);
	value = json_object_get(auth, given);
	if (!json_is_string(value) || json_string_length(value) == 0 ||
	    strlen(json_string_value(value)) != json_string_length(value)) {
		rc = load_error(ctx, -EINVAL, key_path, "must be a non-empty string");
		goto out;
	}
	source = json_string_value(value);
	if (given == env_key) {
		rc = secret_from_env(ctx, key_path, source, dest);
	} else if (given == file_key) {
		file = resolve_path(ctx, source);
		if (!file) {
			rc = out_of_memory(ctx);
			goto out;
		}
		rc = secret_from_file(ctx, key_path, file, dest);
		source = file;
	} else {
		rc = inline_allowed(ctx, key_path);
		if (rc == 0) {
			*dest = strdup(source);
			rc = *dest ? 0 : out_of_memory(ctx);
		}
		source = INLINE_SOURCE;
	}
	if (rc < 0)
		goto out;
	rc = auth_source_add(cloud, given, source);
	if (rc < 0) {
		rc = out_of_memory(ctx);
		goto out;
	}
	rc = 1;
out:
	free(file);
	return rc;
}

/* read_slot for callers that go on in check mode after an error there:
 * the slot then counts as given, so that no second error (a key that
 * "goes together" with it) follows from the first. */
static int read_slot_or_recover(struct load_ctx *ctx, const char *auth_path, json_t *auth,
				const char *name, struct cloud *cloud, char **dest)
{
	int rc = read_slot(ctx, auth_path, auth, name, cloud, dest);

	if (rc < 0 && load_recover(ctx, rc) == 0)
		return 1;
	return rc;
}

/* The default of providers keyed by one environment variable. */
static int api_key_default(struct load_ctx *ctx, const char *auth_path, const char *var,
			   int required, struct cloud *cloud)
{
	const char *value = getenv(var);
	int rc;

	if (!value || !*value) {
		if (!required || load_secret_absent(ctx))
			return 0;
		return load_error(ctx, -EINVAL, auth_path,
				  "absent, and environment variable %s is not set", var);
	}
	cloud->credentials.api_key = strdup(value);
	if (!cloud->credentials.api_key)
		return out_of_memory(ctx);
	rc = auth_source_add(cloud, "api_key_env", var);
	return rc < 0 ? out_of_memory(ctx) : 0;
}

/* OPENAI_API_KEY goes only where OpenAI itself is asked: a server of
 * one's own (Ollama, vLLM) gets a key only when auth says so. */
static int uses_openai_itself(const struct cloud *cloud)
{
	size_t i;

	for (i = 0; i < cloud->n_regions; i++) {
		if (cloud->regions[i].endpoint &&
		    strcmp(cloud->regions[i].endpoint, OPENAI_DEFAULT_ENDPOINT) == 0)
			return 1;
	}
	return 0;
}

/* Returns a new string: $AWS_SHARED_CREDENTIALS_FILE or
 * ~/.aws/credentials. NULL: out of memory or no home directory. */
static char *aws_credentials_path(void)
{
	const char *file = getenv("AWS_SHARED_CREDENTIALS_FILE");
	const char *home = getenv("HOME");
	struct passwd *pw;
	char *path;

	if (file && *file)
		return strdup(file);
	if (!home || !*home) {
		pw = getpwuid(getuid());
		home = pw ? pw->pw_dir : NULL;
	}
	if (!home)
		return NULL;
	if (asprintf(&path, "%s/.aws/credentials", home) < 0)
		return NULL;
	return path;
}

static const char *aws_profile_name(void)
{
	const char *profile = getenv("AWS_PROFILE");

	return profile && *profile ? profile : "default";
}

static int aws_file_credentials(struct load_ctx *ctx, const char *auth_path, const char *prefix,
				const char *file, const char *profile, struct cloud *cloud)
{
	char *default_file = NULL;
	int rc;

	if (!file) {
		default_file = aws_credentials_path();
		if (!default_file && load_secret_absent(ctx)) {
			rc = 0;
			goto out;
		}
		if (!default_file) {
			rc = load_error(ctx, -ENOENT, auth_path,
					"%sno home directory to find .aws/credentials in", prefix);
			goto out;
		}
		file = default_file;
	}
	if (!profile)
		profile = aws_profile_name();
	rc = aws_profile_read(ctx, auth_path, prefix, file, profile, &cloud->credentials);
	if (rc < 0)
		goto out;
	rc = auth_source_add(cloud, "credentials_file", file);
	if (rc == 0)
		rc = auth_source_add(cloud, "profile", profile);
	if (rc < 0)
		rc = out_of_memory(ctx);
out:
	free(default_file);
	return rc;
}

static int bedrock_default(struct load_ctx *ctx, const char *auth_path, struct cloud *cloud)
{
	static const struct {
		const char *var;
		const char *key;
	} vars[] = {
		{ "AWS_ACCESS_KEY_ID", "access_key_id_env" },
		{ "AWS_SECRET_ACCESS_KEY", "secret_access_key_env" },
		{ "AWS_SESSION_TOKEN", "session_token_env" },
	};
	struct credentials *creds = &cloud->credentials;
	char **dests[3];
	const char *value;
	size_t i;
	int rc;

	value = getenv("AWS_ACCESS_KEY_ID");
	if (!value || !*value)
		return aws_file_credentials(ctx, auth_path,
					    "absent, AWS_ACCESS_KEY_ID is not set, and ", NULL,
					    NULL, cloud);
	value = getenv("AWS_SECRET_ACCESS_KEY");
	if ((!value || !*value) && !load_secret_absent(ctx))
		return load_error(
			ctx, -EINVAL, auth_path,
			"absent, and AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");

	dests[0] = &creds->aws_access_key_id;
	dests[1] = &creds->aws_secret_access_key;
	dests[2] = &creds->aws_session_token;
	for (i = 0; i < 3; i++) {
		value = getenv(vars[i].var);
		if (!value || !*value)
			continue;
		*dests[i] = strdup(value);
		if (!*dests[i])
			return out_of_memory(ctx);
		rc = auth_source_add(cloud, vars[i].key, vars[i].var);
		if (rc < 0)
			return out_of_memory(ctx);
	}
	return 0;
}

static int bedrock_auth(struct load_ctx *ctx, const char *auth_path, json_t *auth,
			struct cloud *cloud)
{
	struct credentials *creds = &cloud->credentials;
	char *file = NULL, *profile = NULL, *resolved = NULL;
	int have_id, have_secret, have_token;
	int rc;

	rc = read_slot_or_recover(ctx, auth_path, auth, "access_key_id", cloud,
				  &creds->aws_access_key_id);
	if (rc < 0)
		goto out;
	have_id = rc;
	rc = read_slot_or_recover(ctx, auth_path, auth, "secret_access_key", cloud,
				  &creds->aws_secret_access_key);
	if (rc < 0)
		goto out;
	have_secret = rc;
	rc = read_slot_or_recover(ctx, auth_path, auth, "session_token", cloud,
				  &creds->aws_session_token);
	if (rc < 0)
		goto out;
	have_token = rc;

	rc = load_recover(ctx, json_take_string(ctx, auth_path, auth, "credentials_file", &file));
	if (rc < 0)
		goto out;
	rc = load_recover(ctx, json_take_string(ctx, auth_path, auth, "profile", &profile));
	if (rc < 0)
		goto out;

	if (have_id || have_secret || have_token) {
		if (file || profile) {
			rc = load_error(
				ctx, -EINVAL, auth_path,
				"give either access keys or credentials_file/profile, not both");
			goto out;
		}
		if (!have_id || !have_secret) {
			rc = load_error(ctx, -EINVAL, auth_path,
					"access_key_id and secret_access_key go together");
			goto out;
		}
		rc = 0;
		goto out;
	}
	if (file) {
		resolved = resolve_path(ctx, file);
		if (!resolved) {
			rc = out_of_memory(ctx);
			goto out;
		}
	}
	rc = aws_file_credentials(ctx, auth_path, "", resolved, profile, cloud);
out:
	free(resolved);
	free(profile);
	free(file);
	return rc;
}

static int vertex_service_account(struct load_ctx *ctx, const char *path, const char *prefix,
				  const char *file, struct cloud *cloud)
{
	int rc;

	rc = service_account_read(ctx, path, prefix, file, &cloud->credentials.service_account,
				  NULL);
	if (rc < 0)
		return rc;
	rc = auth_source_add(cloud, "service_account_file", file);
	return rc < 0 ? out_of_memory(ctx) : 0;
}

static int vertex_auth(struct load_ctx *ctx, const char *auth_path, json_t *auth,
		       struct cloud *cloud)
{
	char key_path[JSON_PATH_MAX];
	char *file = NULL, *resolved = NULL;
	const char *default_file;
	int rc;

	if (!auth) {
		default_file = getenv("GOOGLE_APPLICATION_CREDENTIALS");
		if ((!default_file || !*default_file) && load_secret_absent(ctx))
			return 0;
		if (!default_file || !*default_file)
			return load_error(ctx, -EINVAL, auth_path,
					  "absent, and environment variable "
					  "GOOGLE_APPLICATION_CREDENTIALS is not set");
		return vertex_service_account(
			ctx, auth_path, "GOOGLE_APPLICATION_CREDENTIALS: ", default_file, cloud);
	}

	rc = json_take_string(ctx, auth_path, auth, "service_account_file", &file);
	if (rc < 0)
		goto out;
	if (file) {
		if (json_object_get(auth, "access_token_env") ||
		    json_object_get(auth, "access_token")) {
			rc = load_error(
				ctx, -EINVAL, auth_path,
				"give either service_account_file or an access token, not both");
			goto out;
		}
		resolved = resolve_path(ctx, file);
		if (!resolved) {
			rc = out_of_memory(ctx);
			goto out;
		}
		json_path_join(key_path, auth_path, "service_account_file");
		rc = vertex_service_account(ctx, key_path, "", resolved, cloud);
		goto out;
	}
	rc = read_slot(ctx, auth_path, auth, "access_token", cloud,
		       &cloud->credentials.bearer_token);
	if (rc > 0)
		rc = 0;
out:
	free(resolved);
	free(file);
	return rc;
}

static int azure_auth(struct load_ctx *ctx, const char *auth_path, json_t *auth,
		      struct cloud *cloud)
{
	struct credentials *creds = &cloud->credentials;
	int have_key;
	int rc;

	if (!auth)
		return api_key_default(ctx, auth_path, "AZURE_OPENAI_API_KEY", 1, cloud);
	rc = read_slot_or_recover(ctx, auth_path, auth, "api_key", cloud, &creds->api_key);
	if (rc < 0)
		return rc;
	have_key = rc;
	rc = read_slot_or_recover(ctx, auth_path, auth, "bearer_token", cloud,
				  &creds->bearer_token);
	if (rc < 0)
		return rc;
	if (have_key && rc)
		return load_error(ctx, -EINVAL, auth_path,
				  "give either an api key or a bearer token, not both");
	return 0;
}

int credentials_load(struct load_ctx *ctx, const char *cloud_path, json_t *auth,
		     struct cloud *cloud)
{
	char auth_path[JSON_PATH_MAX];
	int rc;

	json_path_join(auth_path, cloud_path, "auth");
	if (auth && !json_is_object(auth))
		return load_error(ctx, -EINVAL, auth_path, "must be an object");
	if (auth) {
		rc = load_recover(ctx, check_auth_keys(ctx, auth_path, auth, cloud->provider));
		if (rc < 0)
			return rc;
		/* An empty object says no more than an absent one. */
		if (json_object_size(auth) == 0)
			auth = NULL;
	}

	switch (cloud->provider) {
	case PROVIDER_OPENAI:
		if (!auth && !uses_openai_itself(cloud))
			return 0;
		if (!auth)
			return api_key_default(ctx, auth_path, "OPENAI_API_KEY", 0, cloud);
		break;
	case PROVIDER_ANTHROPIC:
		if (!auth)
			return api_key_default(ctx, auth_path, "ANTHROPIC_API_KEY", 1, cloud);
		break;
	case PROVIDER_AZURE:
		return azure_auth(ctx, auth_path, auth, cloud);
	case PROVIDER_BEDROCK:
		if (!auth)
			return bedrock_default(ctx, auth_path, cloud);
		return bedrock_auth(ctx, auth_path, auth, cloud);
	case PROVIDER_VERTEX:
		return vertex_auth(ctx, auth_path, auth, cloud);
	}
	rc = read_slot(ctx, auth_path, auth, "api_key", cloud, &cloud->credentials.api_key);
	return rc < 0 ? rc : 0;
}
