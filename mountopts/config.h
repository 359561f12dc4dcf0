/* The config model: clouds, regions and model deployments (SPEC §3).
 *
 * mountopts/ knows no runtime: config_load() turns a JSON file (or the
 * environment, §3.4) into these plain structs, with every credential
 * already read into memory. Everything hangs off one struct config,
 * which owns all of it; config_free() releases it. */
#ifndef PROMPTFS_CONFIG_H
#define PROMPTFS_CONFIG_H

#include <stddef.h>
#include <stdio.h>

enum provider {
	PROVIDER_OPENAI,
	PROVIDER_AZURE,
	PROVIDER_BEDROCK,
	PROVIDER_VERTEX,
	PROVIDER_ANTHROPIC,
};

/* A Google service account key, as read from its JSON file. */
struct google_service_account {
	char *client_email;
	char *private_key_pem; /* secret */
	char *private_key_id;
	char *token_uri;
};

/* Secrets, resolved at load time. NULL where not configured. Never
 * printed, logged, or written anywhere. */
struct credentials {
	char *api_key;	    /* openai, anthropic; azure api-key */
	char *bearer_token; /* azure Entra ID; vertex access token */
	char *aws_access_key_id;
	char *aws_secret_access_key;
	char *aws_session_token;
	struct google_service_account *service_account; /* vertex */
};

struct price {
	int known;
	int from_catalog;      /* known from the catalog, not the config's own "price" */
	double input_per_mtok; /* USD per million tokens */
	double output_per_mtok;
};

/* The Azure OpenAI api-version of a model whose config names none: the
 * config loader fills it in, the azure backend falls back on it. */
#define AZURE_DEFAULT_API_VERSION "2024-10-21"

/* One deployment: prompts under cloud/region/model run exactly here. */
struct model {
	char *name; /* directory name */
	char *id;   /* provider model id / deployment / modelId */
	char *family;
	struct price price;
	long max_output_tokens;	     /* 0: not set */
	char *api_version;	     /* azure (the config fills in the default); NULL elsewhere */
	const struct region *region; /* back pointer, borrowed */
};

struct region {
	char *name;
	char **geo; /* residency tags */
	size_t n_geo;
	char *endpoint; /* base URL, always set (default filled in) */
	struct model *models;
	size_t n_models;
	const struct cloud *cloud; /* back pointer, borrowed */
};

/* Where one credential came from, for --print-config: a key of the
 * `auth` object and its value, e.g. {"api_key_env", "OPENAI_API_KEY"} or
 * {"service_account_file", "/etc/promptfs/gcp-sa.json"}. Never a secret:
 * an inline secret is recorded with the value "(inline, hidden)". */
struct auth_source {
	char *key;
	char *value;
};

struct cloud {
	char *name;
	enum provider provider;
	char *project; /* vertex */
	struct credentials credentials;
	struct region *regions;
	size_t n_regions;
	struct auth_source *auth_sources; /* the effective sources */
	size_t n_auth_sources;
};

struct config {
	char *path; /* file it came from; NULL for the embedded default */
	struct cloud *clouds;
	size_t n_clouds;
};

/* Longest message config_load() writes: file, JSON path, reason. */
#define CONFIG_ERROR_MAX 1024

/* Loads and validates the config at PATH, with CATALOG (may be NULL:
 * built-in) filling in model prices and families. Returns 0 and a new
 * config in *OUT (caller frees with config_free), or -errno with a
 * sentence in ERR naming the file, the JSON path and the reason, e.g.
 * "clouds.json: clouds.aws.regions.eu-central-1.geo: required". */
int config_load(const char *path, const char *catalog_path, struct config **out,
		char err[CONFIG_ERROR_MAX]);

void config_free(struct config *cfg);

/* What config_check() found. */
struct config_report {
	char **errors; /* each "FILE: JSON.PATH: reason", in file order */
	size_t n_errors;
	size_t n_lost;	       /* errors not recorded for want of memory */
	size_t secrets_absent; /* secrets not here, which are no error */
	size_t n_clouds, n_regions, n_models;
};

/* Validates the config at PATH (with CATALOG, may be NULL: built-in) by
 * every rule config_load() applies, but reports every error instead of
 * the first, and takes a secret that is not here (an unset environment
 * variable, an absent key file) for no error: a present secret file is
 * still checked, its mode included (SPEC §3.2). Fills REPORT (release
 * it with config_report_release). Returns 0 when valid, -EINVAL when
 * errors were found, -ENOMEM. */
int config_check(const char *path, const char *catalog_path, struct config_report *report);

void config_report_release(struct config_report *report);

/* promptfs --check: runs config_check() and prints each error on ERR as
 * "promptfs: FILE: JSON.PATH: reason", or one OK line on OUT. Returns
 * the exit status: 0 valid, 1 not. */
int config_check_command(const char *path, const char *catalog_path, FILE *out, FILE *err);

const char *provider_name(enum provider p);

/* The routed view's directory at the mount root; no cloud may be named so. */
#define ANY_DIR "any"

/* The tag NAME as the config spells it (a region's geo entry), or NULL
 * when no region has it: the directories of any/. */
const char *config_geo_named(const struct config *cfg, const char *name);

/* The family NAME as the config spells it (a model's family) when a
 * deployment of it is in a region tagged GEO, else NULL: the directories
 * of any/GEO/. */
const char *config_family_in_geo(const struct config *cfg, const char *geo, const char *name);

/* Whether MODEL's region carries the tag GEO. */
int model_has_geo(const struct model *model, const char *geo);

/* Finds a deployment by its three directory names; NULL if none. */
const struct model *config_find_model(const struct config *cfg, const char *cloud,
				      const char *region, const char *model);

/* Builds the embedded default (SPEC §3.4) from the environment the
 * vendors' own SDKs read, with CATALOG (may be NULL: built-in) supplying
 * the models. Returns 0 and a new config in *OUT (caller frees with
 * config_free; its path is NULL), or -errno with a sentence in ERR.
 * Fails with -ENOENT when the environment names no cloud at all. */
int config_from_environment(const char *catalog_path, struct config **out,
			    char err[CONFIG_ERROR_MAX]);

/* Writes CFG to OUT as JSON in the SPEC §3.1 format, with every default
 * filled in and credentials shown only as the names of the environment
 * variables and files they come from. Returns 0 or -errno. */
int config_print(const struct config *cfg, FILE *out);

/* Whether A and B describe the same tree: clouds, providers, regions,
 * endpoints and models. */
int config_same_structure(const struct config *a, const struct config *b);

/* Moves FRESH's credentials into LIVE for every cloud both have (same
 * name and provider), and LIVE's old ones into FRESH, which the caller
 * then frees with config_free. Returns how many clouds changed hands.
 * Only the thread that reads credentials (the engine's) may call it. */
size_t config_adopt_credentials(struct config *live, struct config *fresh);

/* Parses a provider name ("openai", ...). Returns 0 and sets *OUT, or
 * -EINVAL for a name that is not one. */
int provider_parse(const char *name, enum provider *out);

#endif
