/* --print-config: the config in use, as a §3.1 document with every
 * default filled in. Credentials appear only as where they come from:
 * every cloud has an "auth" naming its variables and files, or "auth": {}
 * when it is sent no credentials at all (an OpenAI-compatible server of
 * one's own, or OpenAI without OPENAI_API_KEY). */
#include <errno.h>
#include <stdio.h>

#include "mountopts/config.h"
#include "mountopts/loader.h"

/* Each builder returns a new object (caller decrefs), NULL on ENOMEM;
 * jansson's *_set_new() takes NULL values and reports the failure. */

static json_t *model_json(const struct model *model)
{
	json_t *obj = json_object();
	int failed = 0;

	failed |= json_object_set_new(obj, "id", json_string(model->id));
	failed |= json_object_set_new(obj, "family", json_string(model->family));
	if (model->price.known)
		failed |= json_object_set_new(
			obj, "price",
			json_pack("{s:f, s:f}", "input_per_mtok", model->price.input_per_mtok,
				  "output_per_mtok", model->price.output_per_mtok));
	if (model->max_output_tokens)
		failed |= json_object_set_new(obj, "max_output_tokens",
					      json_integer(model->max_output_tokens));
	if (model->api_version)
		failed |= json_object_set_new(obj, "api_version", json_string(model->api_version));
	if (failed) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

static json_t *region_json(const struct region *region)
{
	json_t *obj = json_object(), *geo = json_array(), *models = json_object();
	int failed = 0;
	size_t i;

	for (i = 0; i < region->n_geo; i++)
		failed |= json_array_append_new(geo, json_string(region->geo[i]));
	for (i = 0; i < region->n_models; i++)
		failed |= json_object_set_new(models, region->models[i].name,
					      model_json(&region->models[i]));
	failed |= json_object_set_new(obj, "geo", geo);
	failed |= json_object_set_new(obj, "endpoint", json_string(region->endpoint));
	failed |= json_object_set_new(obj, "models", models);
	if (failed) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

static json_t *cloud_json(const struct cloud *cloud)
{
	json_t *obj = json_object(), *auth = json_object();
	json_t *regions = json_object();
	int failed = 0;
	size_t i;

	failed |= json_object_set_new(obj, "provider", json_string(provider_name(cloud->provider)));
	if (cloud->project)
		failed |= json_object_set_new(obj, "project", json_string(cloud->project));
	/* auth_sources hold names of variables and files, never secrets;
	 * none: no key is sent, which an empty "auth" says when loaded */
	for (i = 0; i < cloud->n_auth_sources; i++)
		failed |= json_object_set_new(auth, cloud->auth_sources[i].key,
					      json_string(cloud->auth_sources[i].value));
	failed |= json_object_set_new(obj, "auth", auth);
	for (i = 0; i < cloud->n_regions; i++)
		failed |= json_object_set_new(regions, cloud->regions[i].name,
					      region_json(&cloud->regions[i]));
	failed |= json_object_set_new(obj, "regions", regions);
	if (failed) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

int config_print(const struct config *cfg, FILE *out)
{
	json_t *root = json_object(), *clouds = json_object();
	int failed = 0;
	size_t i;
	int rc;

	for (i = 0; i < cfg->n_clouds; i++)
		failed |= json_object_set_new(clouds, cfg->clouds[i].name,
					      cloud_json(&cfg->clouds[i]));
	failed |= json_object_set_new(root, "clouds", clouds);
	if (failed) {
		rc = -ENOMEM;
		goto out;
	}
	rc = json_dumpf(root, out, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
	if (rc == 0 && fputc('\n', out) == EOF)
		rc = -1;
	if (rc == 0 && fflush(out) == EOF)
		rc = -1;
	rc = rc < 0 ? -EIO : 0;
out:
	json_decref(root);
	return rc;
}
