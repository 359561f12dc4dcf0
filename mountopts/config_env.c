/* The embedded default (SPEC §3.4): a config built from the environment
 * that each vendor's own SDK reads. It is written as a §3.1 document and
 * read by the same code as a config file, so both obey the same rules. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mountopts/catalog.h"
#include "mountopts/config.h"
#include "mountopts/credentials.h"
#include "mountopts/loader.h"

#define LOCAL_PROBE_TIMEOUT_MS 300
#define LOCAL_DEFAULT_HOST "127.0.0.1"
#define LOCAL_DEFAULT_PORT "11434"
/* Ollama's own default model; a local server lists no prices. */
#define LOCAL_DEFAULT_MODEL "llama3.2"
#define VERTEX_DEFAULT_LOCATION "us-central1"

/* One cloud of the embedded default. */
struct env_cloud {
	const char *name;
	enum provider provider;
	const char *project;  /* vertex */
	const char *auth_key; /* NULL: the provider's default */
	const char *auth_value;
	const char *region;
	const char *endpoint; /* NULL: the provider's default */
	int local;
};

static const char *env(const char *name)
{
	const char *value = getenv(name);

	return value && *value ? value : NULL;
}

/* A Bedrock cross-region profile ("eu.anthropic...") runs only from a
 * region of its own geography. */
static int bedrock_profile_fits(const char *id, const char *const *geo, size_t n_geo)
{
	static const char *const prefixes[] = { "us.", "eu.", "apac.", NULL };
	size_t i, j, n;

	for (i = 0; prefixes[i]; i++) {
		n = strlen(prefixes[i]);
		if (strncmp(id, prefixes[i], n) != 0)
			continue;
		for (j = 0; j < n_geo; j++) {
			if (strlen(geo[j]) == n - 1 && strncmp(geo[j], prefixes[i], n - 1) == 0)
				return 1;
		}
		return 0;
	}
	return 1;
}

static int usable_as_name(const char *id)
{
	return id[0] && id[0] != '.' && !strchr(id, '/') && strlen(id) <= 255;
}

/* Returns a new object of the catalog's models for the cloud (caller
 * decrefs); NULL: ENOMEM. */
static json_t *models_json(const struct catalog *cat, const struct env_cloud *ec,
			   const char *const *geo, size_t n_geo)
{
	json_t *models = json_object(), *price;
	size_t i;

	if (!models)
		return NULL;
	if (ec->local) {
		price = json_pack("{s:f, s:f}", "input_per_mtok", 0.0, "output_per_mtok", 0.0);
		if (json_object_set_new(models, LOCAL_DEFAULT_MODEL,
					json_pack("{s:o}", "price", price)) < 0)
			goto fail;
		return models;
	}
	for (i = 0; i < cat->n_entries; i++) {
		const struct catalog_entry *entry = &cat->entries[i];

		if (entry->provider != ec->provider || !usable_as_name(entry->id))
			continue;
		if (ec->provider == PROVIDER_BEDROCK &&
		    !bedrock_profile_fits(entry->id, geo, n_geo))
			continue;
		if (json_object_set_new(models, entry->id, json_object()) < 0)
			goto fail;
	}
	return models;
fail:
	json_decref(models);
	return NULL;
}

/* Adds EC to CLOUDS unless the catalog offers it no model. 0 or -ENOMEM. */
static int add_cloud(json_t *clouds, const struct catalog *cat, const struct env_cloud *ec)
{
	const char *geo[2] = { "local", NULL };
	json_t *cloud = NULL, *region = NULL, *models = NULL, *tags;
	size_t n_geo = 1, i;
	int rc = -ENOMEM;

	if (!ec->local)
		n_geo = region_geo_tags(ec->provider, ec->region, geo);
	models = models_json(cat, ec, geo, n_geo);
	if (!models)
		goto out;
	if (json_object_size(models) == 0) {
		rc = 0;
		goto out;
	}

	region = json_object();
	tags = json_array();
	if (json_object_set_new(region, "geo", tags) < 0)
		goto out;
	for (i = 0; i < n_geo; i++) {
		if (json_array_append_new(tags, json_string(geo[i])) < 0)
			goto out;
	}
	if (ec->endpoint && json_object_set_new(region, "endpoint", json_string(ec->endpoint)) < 0)
		goto out;
	rc = json_object_set_new(region, "models", models);
	models = NULL;
	if (rc < 0) {
		rc = -ENOMEM;
		goto out;
	}
	rc = -ENOMEM;

	cloud = json_object();
	if (json_object_set_new(cloud, "provider", json_string(provider_name(ec->provider))) < 0)
		goto out;
	if (ec->project && json_object_set_new(cloud, "project", json_string(ec->project)) < 0)
		goto out;
	if (ec->auth_key &&
	    json_object_set_new(cloud, "auth", json_pack("{s:s}", ec->auth_key, ec->auth_value)) <
		    0)
		goto out;
	if (json_object_set_new(cloud, "regions", json_pack("{s:O}", ec->region, region)) < 0)
		goto out;
	rc = json_object_set(clouds, ec->name, cloud) < 0 ? -ENOMEM : 0;
out:
	json_decref(cloud);
	json_decref(region);
	json_decref(models);
	return rc;
}

/* Where $OLLAMA_HOST points: "host", "host:port", "http://host:port" or
 * "[v6]:port". */
struct local_server {
	char scheme[8];
	char host[256];
	char port[8];
	char endpoint[300];
};

static void parse_ollama_host(const char *value, struct local_server *ls)
{
	char buf[300], *host, *colon, *slash, *close;

	snprintf(ls->scheme, sizeof(ls->scheme), "http");
	snprintf(ls->port, sizeof(ls->port), LOCAL_DEFAULT_PORT);
	snprintf(buf, sizeof(buf), "%s", value ? value : "");
	host = buf;
	if (strncmp(host, "http://", 7) == 0) {
		host += 7;
	} else if (strncmp(host, "https://", 8) == 0) {
		host += 8;
		snprintf(ls->scheme, sizeof(ls->scheme), "https");
		snprintf(ls->port, sizeof(ls->port), "443");
	}
	slash = strchr(host, '/');
	if (slash)
		*slash = '\0';
	if (host[0] == '[') {
		close = strchr(host, ']');
		host++;
		if (close) {
			*close = '\0';
			if (close[1] == ':' && close[2])
				format_into(ls->port, sizeof(ls->port), "%s", close + 2);
		}
	} else {
		colon = strchr(host, ':');
		/* One colon separates a port; more make a bare IPv6 address. */
		if (colon && !strchr(colon + 1, ':')) {
			*colon = '\0';
			if (colon[1])
				format_into(ls->port, sizeof(ls->port), "%s", colon + 1);
		}
	}
	/* A server bound to every address answers on loopback. */
	if (!*host || strcmp(host, "0.0.0.0") == 0)
		host = LOCAL_DEFAULT_HOST;
	else if (strcmp(host, "::") == 0)
		host = "::1";
	format_into(ls->host, sizeof(ls->host), "%s", host);
	format_into(ls->endpoint, sizeof(ls->endpoint),
		    strchr(ls->host, ':') ? "%s://[%s]:%s/v1" : "%s://%s:%s/v1", ls->scheme,
		    ls->host, ls->port);
}

static int aws_credentials_present(void)
{
	const char *file = env("AWS_SHARED_CREDENTIALS_FILE");
	const char *home = env("HOME");
	char path[4096];

	if (env("AWS_ACCESS_KEY_ID"))
		return 1;
	if (!file && !home)
		return 0;
	if (!file) {
		format_into(path, sizeof(path), "%s/.aws/credentials", home);
		file = path;
	}
	return access(file, F_OK) == 0;
}

/* The Vertex project: $GOOGLE_CLOUD_PROJECT, else the key's own. */
static int vertex_project(struct load_ctx *ctx, const char *key_file, char **project)
{
	struct google_service_account *account = NULL;
	int rc;

	if (env("GOOGLE_CLOUD_PROJECT")) {
		*project = strdup(env("GOOGLE_CLOUD_PROJECT"));
		return *project ? 0 : load_error(ctx, -ENOMEM, NULL, "out of memory");
	}
	rc = service_account_read(ctx, "clouds.gcp.auth",
				  "GOOGLE_APPLICATION_CREDENTIALS: ", key_file, &account, project);
	service_account_free(account);
	if (rc < 0)
		return rc;
	if (!*project)
		return load_error(ctx, -EINVAL, "clouds.gcp.project",
				  "GOOGLE_CLOUD_PROJECT is not set and %s has no project_id",
				  key_file);
	return 0;
}

static int add_env_clouds(struct load_ctx *ctx, json_t *clouds, char **project)
{
	const struct catalog *cat = ctx->catalog;
	struct local_server local;
	struct env_cloud ec;
	const char *value;
	int rc;

	if (env("OPENAI_API_KEY")) {
		ec = (struct env_cloud){
			"openai", PROVIDER_OPENAI,	  NULL, "api_key_env", "OPENAI_API_KEY",
			"us",	  env("OPENAI_BASE_URL"), 0
		};
		rc = add_cloud(clouds, cat, &ec);
		if (rc < 0)
			return rc;
	}
	if (env("ANTHROPIC_API_KEY")) {
		ec = (struct env_cloud){ "anthropic",
					 PROVIDER_ANTHROPIC,
					 NULL,
					 "api_key_env",
					 "ANTHROPIC_API_KEY",
					 "us",
					 NULL,
					 0 };
		rc = add_cloud(clouds, cat, &ec);
		if (rc < 0)
			return rc;
	}
	if (env("AZURE_OPENAI_ENDPOINT") && env("AZURE_OPENAI_API_KEY")) {
		value = env("AZURE_OPENAI_REGION");
		ec = (struct env_cloud){ "azure",
					 PROVIDER_AZURE,
					 NULL,
					 "api_key_env",
					 "AZURE_OPENAI_API_KEY",
					 value ? value : "global",
					 env("AZURE_OPENAI_ENDPOINT"),
					 0 };
		rc = add_cloud(clouds, cat, &ec);
		if (rc < 0)
			return rc;
	}
	value = env("AWS_REGION") ? env("AWS_REGION") : env("AWS_DEFAULT_REGION");
	if (value && aws_credentials_present()) {
		ec =
			(struct env_cloud){ "aws", PROVIDER_BEDROCK, NULL, NULL, NULL, value, NULL,
					    0 };
		rc = add_cloud(clouds, cat, &ec);
		if (rc < 0)
			return rc;
	}
	value = env("GOOGLE_APPLICATION_CREDENTIALS");
	if (value) {
		rc = vertex_project(ctx, value, project);
		if (rc < 0)
			return rc;
		ec = (struct env_cloud){
			"gcp",
			PROVIDER_VERTEX,
			*project,
			"service_account_file",
			value,
			env("GOOGLE_CLOUD_LOCATION") ? env("GOOGLE_CLOUD_LOCATION") : VERTEX_DEFAULT_LOCATION,
			NULL,
			0
		};
		rc = add_cloud(clouds, cat, &ec);
		if (rc < 0)
			return rc;
	}
	parse_ollama_host(env("OLLAMA_HOST"), &local);
	if (tcp_port_answers(local.host, local.port, LOCAL_PROBE_TIMEOUT_MS)) {
		ec = (struct env_cloud){ "local", PROVIDER_OPENAI, NULL,	   NULL,
					 NULL,	  "localhost",	   local.endpoint, 1 };
		rc = add_cloud(clouds, cat, &ec);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int config_from_environment(const char *catalog_path, struct config **out,
			    char err[CONFIG_ERROR_MAX])
{
	struct load_ctx ctx = { .file = "environment", .err = err };
	struct catalog *catalog = NULL;
	json_t *root = NULL, *clouds;
	char *project = NULL;
	int rc;

	rc = catalog_load(catalog_path, &catalog, err);
	if (rc < 0)
		goto out;
	ctx.catalog = catalog;

	root = json_object();
	clouds = json_object();
	if (json_object_set_new(root, "clouds", clouds) < 0) {
		rc = load_error(&ctx, -ENOMEM, NULL, "out of memory");
		goto out;
	}
	rc = add_env_clouds(&ctx, clouds, &project);
	if (rc == -ENOMEM)
		rc = load_error(&ctx, rc, NULL, "out of memory");
	if (rc < 0)
		goto out;
	if (json_object_size(clouds) == 0) {
		rc = load_error(&ctx, -ENOENT, NULL,
				"no cloud configured: set OPENAI_API_KEY, ANTHROPIC_API_KEY, "
				"AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY, AWS_REGION with "
				"AWS credentials, or GOOGLE_APPLICATION_CREDENTIALS, run a local "
				"server at $OLLAMA_HOST, or give a CONFIG file");
		goto out;
	}
	rc = config_from_json(&ctx, root, out);
out:
	free(project);
	json_decref(root);
	catalog_free(catalog);
	return rc;
}
