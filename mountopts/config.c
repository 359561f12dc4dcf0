/* Loading and validating the config file (SPEC §3.1). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mountopts/catalog.h"
#include "mountopts/config.h"
#include "mountopts/credentials.h"
#include "mountopts/loader.h"

static const char *const provider_names[] = {
	[PROVIDER_OPENAI] = "openai",	    [PROVIDER_AZURE] = "azure",
	[PROVIDER_BEDROCK] = "bedrock",	    [PROVIDER_VERTEX] = "vertex",
	[PROVIDER_ANTHROPIC] = "anthropic",
};

static const char *const top_keys[] = { "clouds", NULL };
static const char *const cloud_keys[] = { "provider", "project", "auth", "regions", NULL };
static const char *const region_keys[] = { "geo", "endpoint", "models", NULL };
static const char *const model_keys[] = { "id",		 "family", "price", "max_output_tokens",
					  "api_version", NULL };
static const char *const price_keys[] = { "input_per_mtok", "output_per_mtok", NULL };

const char *provider_name(enum provider p)
{
	if ((size_t)p < sizeof(provider_names) / sizeof(provider_names[0]))
		return provider_names[p];
	return "unknown";
}

int provider_parse(const char *name, enum provider *out)
{
	size_t i;

	for (i = 0; i < sizeof(provider_names) / sizeof(provider_names[0]); i++) {
		if (strcmp(name, provider_names[i]) == 0) {
			*out = (enum provider)i;
			return 0;
		}
	}
	return -EINVAL;
}

static int out_of_memory(struct load_ctx *ctx)
{
	return load_error(ctx, -ENOMEM, NULL, "out of memory");
}

/* Returns 0 and a new copy of OBJ[KEY] when present, 0 and *OUT = NULL
 * when absent: the callers decide what absence means. */
static int optional_string(struct load_ctx *ctx, const char *path, json_t *obj, const char *key,
			   char **out)
{
	int rc = json_take_string(ctx, path, obj, key, out);

	return rc < 0 ? rc : 0;
}

static int parse_price(struct load_ctx *ctx, const char *model_path, json_t *price,
		       struct price *out)
{
	char path[JSON_PATH_MAX];
	int rc;

	json_path_join(path, model_path, "price");
	if (!json_is_object(price))
		return load_error(ctx, -EINVAL, path, "must be an object");
	rc = load_recover(ctx, check_keys(ctx, path, price, price_keys));
	if (rc < 0)
		return rc;
	rc = load_recover(
		ctx, json_take_price(ctx, path, price, "input_per_mtok", &out->input_per_mtok));
	if (rc < 0)
		return rc;
	rc = json_take_price(ctx, path, price, "output_per_mtok", &out->output_per_mtok);
	if (rc < 0)
		return rc;
	out->known = 1;
	return 0;
}

static const struct catalog_entry *
catalog_entry_for(struct load_ctx *ctx, const struct cloud *cloud, const struct model *model)
{
	const struct catalog_entry *entry;

	entry = catalog_find(ctx->catalog, cloud->provider, model->id);
	/* Azure deployment names are the customer's own; the directory is
	 * usually named after the model behind it. */
	if (!entry && cloud->provider == PROVIDER_AZURE)
		entry = catalog_find(ctx->catalog, cloud->provider, model->name);
	return entry;
}

static int parse_model(struct load_ctx *ctx, const char *path, json_t *obj,
		       const struct cloud *cloud, struct model *model)
{
	const struct catalog_entry *entry;
	char key_path[JSON_PATH_MAX];
	json_t *value;
	int rc;

	if (!json_is_object(obj))
		return load_error(ctx, -EINVAL, path, "must be an object");
	rc = load_recover(ctx, check_keys(ctx, path, obj, model_keys));
	if (rc < 0)
		return rc;

	rc = load_recover(ctx, optional_string(ctx, path, obj, "id", &model->id));
	if (rc < 0)
		return rc;
	if (!model->id) {
		model->id = strdup(model->name);
		if (!model->id)
			return out_of_memory(ctx);
	}
	entry = catalog_entry_for(ctx, cloud, model);

	rc = load_recover(ctx, optional_string(ctx, path, obj, "family", &model->family));
	if (rc < 0)
		return rc;
	if (!model->family) {
		model->family = strdup(entry ? entry->family : model->name);
		if (!model->family)
			return out_of_memory(ctx);
	}
	/* Families name directories under any/<geo>/. One taken from the
	 * model's name was checked as that name already. */
	if (json_object_get(obj, "family") || entry) {
		json_path_join(key_path, path, "family");
		rc = load_recover(
			ctx, check_file_name(ctx, key_path, model->family, strlen(model->family)));
		if (rc < 0)
			return rc;
	}

	value = json_object_get(obj, "price");
	if (value) {
		rc = load_recover(ctx, parse_price(ctx, path, value, &model->price));
		if (rc < 0)
			return rc;
	} else if (entry) {
		model->price.known = 1;
		model->price.from_catalog = 1;
		model->price.input_per_mtok = entry->input_per_mtok;
		model->price.output_per_mtok = entry->output_per_mtok;
	}

	value = json_object_get(obj, "max_output_tokens");
	if (value) {
		json_path_join(key_path, path, "max_output_tokens");
		if (!json_is_integer(value) || json_integer_value(value) < 1) {
			rc = load_error(ctx, -EINVAL, key_path, "must be an integer >= 1");
			if (load_recover(ctx, rc) < 0)
				return rc;
		} else {
			model->max_output_tokens = (long)json_integer_value(value);
		}
	}

	if (json_object_get(obj, "api_version") && cloud->provider != PROVIDER_AZURE) {
		json_path_join(key_path, path, "api_version");
		return load_error(ctx, -EINVAL, key_path, "only for provider azure");
	}
	rc = optional_string(ctx, path, obj, "api_version", &model->api_version);
	if (rc < 0)
		return rc;
	if (!model->api_version && cloud->provider == PROVIDER_AZURE) {
		model->api_version = strdup(AZURE_DEFAULT_API_VERSION);
		if (!model->api_version)
			return out_of_memory(ctx);
	}
	return 0;
}

static int parse_geo(struct load_ctx *ctx, const char *region_path, json_t *geo,
		     struct region *region)
{
	char path[JSON_PATH_MAX], tag_path[JSON_PATH_MAX];
	size_t i, n;
	json_t *tag;
	int rc;

	json_path_join(path, region_path, "geo");
	if (!geo)
		return load_error(ctx, -EINVAL, path, "required");
	if (json_is_array(geo) && json_array_size(geo) == 0)
		return load_error(ctx, -EINVAL, path, "must not be an empty list");
	if (!json_is_string(geo) && !json_is_array(geo))
		return load_error(ctx, -EINVAL, path, "must be a string or a list of strings");

	n = json_is_array(geo) ? json_array_size(geo) : 1;
	region->geo = calloc(n, sizeof(*region->geo));
	if (!region->geo)
		return out_of_memory(ctx);
	for (i = 0; i < n; i++) {
		tag = json_is_array(geo) ? json_array_get(geo, i) : geo;
		if (json_is_array(geo))
			format_into(tag_path, sizeof(tag_path), "%s[%zu]", path, i);
		else
			format_into(tag_path, sizeof(tag_path), "%s", path);
		region->n_geo = i + 1;
		if (!json_is_string(tag) || json_string_length(tag) == 0)
			rc = load_error(ctx, -EINVAL, tag_path, "must be a non-empty string");
		else /* Tags name directories under any/. */
			rc = check_file_name(ctx, tag_path, json_string_value(tag),
					     json_string_length(tag));
		if (rc < 0) {
			/* in check mode the next tag is read; this one stays NULL */
			rc = load_recover(ctx, rc);
			if (rc < 0)
				return rc;
			continue;
		}
		region->geo[i] = strdup(json_string_value(tag));
		if (!region->geo[i])
			return out_of_memory(ctx);
	}
	return 0;
}

static int default_endpoint(const struct cloud *cloud, const char *region, char **out)
{
	int n = 0;

	switch (cloud->provider) {
	case PROVIDER_OPENAI:
		*out = strdup("https://api.openai.com/v1");
		break;
	case PROVIDER_ANTHROPIC:
		*out = strdup("https://api.anthropic.com");
		break;
	case PROVIDER_BEDROCK:
		n = asprintf(out, "https://bedrock-runtime.%s.amazonaws.com", region);
		break;
	case PROVIDER_VERTEX:
		if (strcmp(region, "global") == 0)
			*out = strdup("https://aiplatform.googleapis.com");
		else
			n = asprintf(out, "https://%s-aiplatform.googleapis.com", region);
		break;
	case PROVIDER_AZURE:
		*out = NULL;
		break;
	}
	if (n < 0)
		*out = NULL;
	return *out ? 0 : -ENOMEM;
}

static int parse_endpoint(struct load_ctx *ctx, const char *region_path, json_t *obj,
			  const struct cloud *cloud, struct region *region)
{
	char path[JSON_PATH_MAX];
	const char *url;
	size_t len;
	int rc;

	json_path_join(path, region_path, "endpoint");
	rc = optional_string(ctx, region_path, obj, "endpoint", &region->endpoint);
	if (rc < 0)
		return rc;
	if (!region->endpoint) {
		if (cloud->provider == PROVIDER_AZURE)
			return load_error(ctx, -EINVAL, path, "required for provider azure");
		rc = default_endpoint(cloud, region->name, &region->endpoint);
		return rc < 0 ? out_of_memory(ctx) : 0;
	}
	url = region->endpoint;
	if (!((strncmp(url, "http://", 7) == 0 && url[7]) ||
	      (strncmp(url, "https://", 8) == 0 && url[8])))
		return load_error(ctx, -EINVAL, path, "must start with http:// or https://");
	/* Backends append "/chat/completions" and the like. */
	len = strlen(url);
	if (region->endpoint[len - 1] == '/')
		region->endpoint[len - 1] = '\0';
	return 0;
}

/* A kind of named entry: the clouds of the file, the regions of a cloud,
 * the models of a region. Their names become directory names. */
struct entry_kind {
	const char *key;  /* the member that holds them: "models" */
	const char *what; /* one of them, in messages: "model" */
	size_t size;	  /* of the struct one is read into */
	/* Reads VALUE, the entry NAME at PATH, into ENTRY: zeroed, and
	 * counted already, so that config_free() frees what a half-read one
	 * holds. PARENT is what the entries belong to. */
	int (*parse)(struct load_ctx *ctx, const char *path, const char *name, json_t *value,
		     void *entry, void *parent);
};

/* Reads OBJ[KIND->key], OBJ being at PATH: required, an object, not
 * empty, and each key a valid directory name. *ENTRIES gets a new array
 * of one struct per key, *N how many were read: both also on failure, so
 * that config_free() frees what was read. */
static int named_entries_parse(struct load_ctx *ctx, const char *path, json_t *obj,
			       const struct entry_kind *kind, void *parent, void **entries,
			       size_t *n)
{
	char entries_path[JSON_PATH_MAX], entry_path[JSON_PATH_MAX];
	json_t *object = json_object_get(obj, kind->key);
	const char *name;
	size_t name_len;
	json_t *value;
	char *array;
	int rc;

	*entries = NULL;
	json_path_join(entries_path, path, kind->key);
	if (!object)
		return load_error(ctx, -EINVAL, entries_path, "required");
	if (!json_is_object(object))
		return load_error(ctx, -EINVAL, entries_path, "must be an object");
	if (json_object_size(object) == 0)
		return load_error(ctx, -EINVAL, entries_path, "at least one %s is required",
				  kind->what);
	array = calloc(json_object_size(object), kind->size);
	if (!array)
		return out_of_memory(ctx);
	*entries = array;
	json_object_keylen_foreach (object, name, name_len, value) {
		json_path_join(entry_path, entries_path, name);
		/* In check mode an entry with a bad name is still read, and
		 * one that failed does not keep the next from being read. */
		rc = load_recover(ctx, check_file_name(ctx, entry_path, name, name_len));
		if (rc < 0)
			return rc;
		rc = kind->parse(ctx, entry_path, name, value, array + (*n)++ * kind->size, parent);
		rc = load_recover(ctx, rc);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int model_entry_parse(struct load_ctx *ctx, const char *path, const char *name,
			     json_t *value, void *entry, void *parent)
{
	struct model *model = entry;
	struct region *region = parent;

	model->region = region;
	model->name = strdup(name);
	if (!model->name)
		return out_of_memory(ctx);
	return parse_model(ctx, path, value, region->cloud, model);
}

static const struct entry_kind model_entries = {
	.key = "models",
	.what = "model",
	.size = sizeof(struct model),
	.parse = model_entry_parse,
};

static int parse_region(struct load_ctx *ctx, const char *path, json_t *obj,
			const struct cloud *cloud, struct region *region)
{
	void *models;
	int rc;

	if (!json_is_object(obj))
		return load_error(ctx, -EINVAL, path, "must be an object");
	rc = load_recover(ctx, check_keys(ctx, path, obj, region_keys));
	if (rc < 0)
		return rc;
	rc = load_recover(ctx, parse_geo(ctx, path, json_object_get(obj, "geo"), region));
	if (rc < 0)
		return rc;
	rc = load_recover(ctx, parse_endpoint(ctx, path, obj, cloud, region));
	if (rc < 0)
		return rc;
	rc = named_entries_parse(ctx, path, obj, &model_entries, region, &models,
				 &region->n_models);
	region->models = models;
	return rc;
}

static int region_entry_parse(struct load_ctx *ctx, const char *path, const char *name,
			      json_t *value, void *entry, void *parent)
{
	struct region *region = entry;
	struct cloud *cloud = parent;

	region->cloud = cloud;
	region->name = strdup(name);
	if (!region->name)
		return out_of_memory(ctx);
	return parse_region(ctx, path, value, cloud, region);
}

static const struct entry_kind region_entries = {
	.key = "regions",
	.what = "region",
	.size = sizeof(struct region),
	.parse = region_entry_parse,
};

static int parse_provider(struct load_ctx *ctx, const char *cloud_path, json_t *obj,
			  struct cloud *cloud)
{
	char path[JSON_PATH_MAX];
	json_t *value = json_object_get(obj, "provider");

	json_path_join(path, cloud_path, "provider");
	if (!value)
		return load_error(ctx, -EINVAL, path, "required");
	if (!json_is_string(value) ||
	    provider_parse(json_string_value(value), &cloud->provider) < 0)
		return load_error(ctx, -EINVAL, path,
				  "must be one of openai, azure, bedrock, vertex, anthropic");
	return 0;
}

static int parse_cloud(struct load_ctx *ctx, const char *path, json_t *obj, struct cloud *cloud)
{
	char key_path[JSON_PATH_MAX];
	void *regions;
	int rc;

	if (!json_is_object(obj))
		return load_error(ctx, -EINVAL, path, "must be an object");
	rc = load_recover(ctx, check_keys(ctx, path, obj, cloud_keys));
	if (rc < 0)
		return rc;
	/* Everything below depends on the provider: without one, the
	 * cloud is not read further, in check mode too. */
	rc = parse_provider(ctx, path, obj, cloud);
	if (rc < 0)
		return rc;

	json_path_join(key_path, path, "project");
	if (cloud->provider == PROVIDER_VERTEX) {
		if (!json_object_get(obj, "project"))
			rc = load_error(ctx, -EINVAL, key_path, "required for provider vertex");
		else
			rc = optional_string(ctx, path, obj, "project", &cloud->project);
	} else if (json_object_get(obj, "project")) {
		rc = load_error(ctx, -EINVAL, key_path, "only for provider vertex");
	}
	rc = load_recover(ctx, rc);
	if (rc < 0)
		return rc;

	rc = named_entries_parse(ctx, path, obj, &region_entries, cloud, &regions,
				 &cloud->n_regions);
	cloud->regions = regions;
	rc = load_recover(ctx, rc);
	if (rc < 0)
		return rc;
	/* Last: the OpenAI default key depends on the endpoints. */
	return credentials_load(ctx, path, json_object_get(obj, "auth"), cloud);
}

static int cloud_entry_parse(struct load_ctx *ctx, const char *path, const char *name,
			     json_t *value, void *entry, void *parent)
{
	struct cloud *cloud = entry;

	(void)parent;
	if (strcmp(name, "any") == 0) {
		int rc = load_error(ctx, -EINVAL, path,
				    "the name \"any\" is reserved for the routed view");

		if (load_recover(ctx, rc) < 0)
			return rc;
	}
	cloud->name = strdup(name);
	if (!cloud->name)
		return out_of_memory(ctx);
	return parse_cloud(ctx, path, value, cloud);
}

static const struct entry_kind cloud_entries = {
	.key = "clouds",
	.what = "cloud",
	.size = sizeof(struct cloud),
	.parse = cloud_entry_parse,
};

static int parse_clouds(struct load_ctx *ctx, json_t *root, struct config *cfg)
{
	void *clouds;
	int rc;

	if (!json_is_object(root))
		return load_error(ctx, -EINVAL, NULL, "top level: must be an object");
	rc = load_recover(ctx, check_keys(ctx, NULL, root, top_keys));
	if (rc < 0)
		return rc;
	rc = named_entries_parse(ctx, NULL, root, &cloud_entries, cfg, &clouds, &cfg->n_clouds);
	cfg->clouds = clouds;
	return rc;
}

int config_from_json(struct load_ctx *ctx, json_t *root, struct config **out)
{
	struct config *cfg;
	int rc;

	cfg = calloc(1, sizeof(*cfg));
	if (!cfg)
		return out_of_memory(ctx);
	rc = parse_clouds(ctx, root, cfg);
	if (rc < 0) {
		config_free(cfg);
		return rc;
	}
	*out = cfg;
	return 0;
}

/* Returns a new copy of the directory holding PATH; NULL: ENOMEM. */
static char *directory_of(const char *path)
{
	char *copy = strdup(path), *dir;

	if (!copy)
		return NULL;
	dir = strdup(dirname(copy));
	free(copy);
	return dir;
}

int config_read(struct load_ctx *ctx, const char *path, struct config **out)
{
	struct config *cfg = NULL;
	json_error_t error;
	json_t *root = NULL;
	struct stat st;
	int fd;
	int rc;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		rc = load_error(ctx, -errno, NULL, "cannot open: %s", strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) < 0) {
		rc = load_error(ctx, -errno, NULL, "cannot stat: %s", strerror(errno));
		goto out;
	}
	ctx->have_file_mode = 1;
	ctx->file_mode = st.st_mode;
	ctx->dir = directory_of(path);
	if (!ctx->dir) {
		rc = out_of_memory(ctx);
		goto out;
	}

	root = json_loadfd(fd, JSON_REJECT_DUPLICATES, &error);
	if (!root) {
		rc = load_syntax_error(ctx, &error);
		goto out;
	}
	rc = config_from_json(ctx, root, &cfg);
	if (rc < 0)
		goto out;
	cfg->path = strdup(path);
	if (!cfg->path) {
		rc = out_of_memory(ctx);
		goto out;
	}
	*out = cfg;
	cfg = NULL;
out:
	config_free(cfg);
	if (root) {
		wipe_inline_secrets(root);
		json_decref(root);
	}
	free(ctx->dir);
	ctx->dir = NULL;
	if (fd >= 0)
		close(fd);
	return rc;
}

int config_load(const char *path, const char *catalog_path, struct config **out,
		char err[CONFIG_ERROR_MAX])
{
	struct load_ctx ctx = { .file = path, .err = err };
	struct catalog *catalog = NULL;
	int rc;

	rc = catalog_load(catalog_path, &catalog, err);
	if (rc < 0)
		return rc;
	ctx.catalog = catalog;
	rc = config_read(&ctx, path, out);
	catalog_free(catalog);
	return rc;
}

static void region_release(struct region *region)
{
	size_t i;

	for (i = 0; i < region->n_models; i++) {
		free(region->models[i].name);
		free(region->models[i].id);
		free(region->models[i].family);
		free(region->models[i].api_version);
	}
	free(region->models);
	for (i = 0; i < region->n_geo; i++)
		free(region->geo[i]);
	free(region->geo);
	free(region->endpoint);
	free(region->name);
}

void config_free(struct config *cfg)
{
	size_t i, j;

	if (!cfg)
		return;
	for (i = 0; i < cfg->n_clouds; i++) {
		struct cloud *cloud = &cfg->clouds[i];

		for (j = 0; j < cloud->n_regions; j++)
			region_release(&cloud->regions[j]);
		free(cloud->regions);
		credentials_release(&cloud->credentials);
		auth_sources_free(cloud);
		free(cloud->project);
		free(cloud->name);
	}
	free(cfg->clouds);
	free(cfg->path);
	free(cfg);
}

const char *config_geo_named(const struct config *cfg, const char *name)
{
	for (size_t c = 0; cfg && c < cfg->n_clouds; c++) {
		const struct cloud *cloud = &cfg->clouds[c];

		for (size_t r = 0; r < cloud->n_regions; r++)
			for (size_t g = 0; g < cloud->regions[r].n_geo; g++)
				if (strcmp(cloud->regions[r].geo[g], name) == 0)
					return cloud->regions[r].geo[g];
	}
	return NULL;
}

int model_has_geo(const struct model *model, const char *geo)
{
	for (size_t g = 0; g < model->region->n_geo; g++)
		if (strcmp(model->region->geo[g], geo) == 0)
			return 1;
	return 0;
}

const char *config_family_in_geo(const struct config *cfg, const char *geo, const char *name)
{
	for (size_t c = 0; cfg && c < cfg->n_clouds; c++) {
		const struct cloud *cloud = &cfg->clouds[c];

		for (size_t r = 0; r < cloud->n_regions; r++) {
			const struct region *region = &cloud->regions[r];

			for (size_t m = 0; m < region->n_models; m++)
				if (strcmp(region->models[m].family, name) == 0 &&
				    model_has_geo(&region->models[m], geo))
					return region->models[m].family;
		}
	}
	return NULL;
}

const struct model *config_find_model(const struct config *cfg, const char *cloud,
				      const char *region, const char *model)
{
	size_t i, j, k;

	for (i = 0; cfg && i < cfg->n_clouds; i++) {
		const struct cloud *c = &cfg->clouds[i];

		if (strcmp(c->name, cloud) != 0)
			continue;
		for (j = 0; j < c->n_regions; j++) {
			const struct region *r = &c->regions[j];

			if (strcmp(r->name, region) != 0)
				continue;
			for (k = 0; k < r->n_models; k++) {
				if (strcmp(r->models[k].name, model) == 0)
					return &r->models[k];
			}
		}
	}
	return NULL;
}
