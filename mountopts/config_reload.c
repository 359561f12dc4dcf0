/* What a re-read config (SIGHUP) may change in a running daemon: the
 * credentials of the clouds it already serves. The tree itself (clouds,
 * regions, models) is fixed for the life of a mount, because inodes and
 * jobs point into it. */
#include <string.h>

#include "mountopts/config.h"

static const struct cloud *find_cloud(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_clouds; i++) {
		if (strcmp(cfg->clouds[i].name, name) == 0)
			return &cfg->clouds[i];
	}
	return NULL;
}

static int same_region(const struct region *a, const struct region *b)
{
	if (strcmp(a->name, b->name) != 0 || strcmp(a->endpoint, b->endpoint) != 0 ||
	    a->n_models != b->n_models)
		return 0;
	for (size_t m = 0; m < a->n_models; m++) {
		if (strcmp(a->models[m].name, b->models[m].name) != 0 ||
		    strcmp(a->models[m].id, b->models[m].id) != 0)
			return 0;
	}
	return 1;
}

int config_same_structure(const struct config *a, const struct config *b)
{
	if (a->n_clouds != b->n_clouds)
		return 0;
	for (size_t c = 0; c < a->n_clouds; c++) {
		const struct cloud *ca = &a->clouds[c];
		const struct cloud *cb = find_cloud(b, ca->name);

		if (!cb || ca->provider != cb->provider || ca->n_regions != cb->n_regions)
			return 0;
		for (size_t r = 0; r < ca->n_regions; r++) {
			if (!same_region(&ca->regions[r], &cb->regions[r]))
				return 0;
		}
	}
	return 1;
}

size_t config_adopt_credentials(struct config *live, struct config *fresh)
{
	size_t adopted = 0;

	for (size_t c = 0; c < live->n_clouds; c++) {
		struct cloud *old = &live->clouds[c];
		struct cloud *new = (struct cloud *)find_cloud(fresh, old->name);
		struct credentials creds;
		struct auth_source *sources;
		size_t n_sources;

		if (!new || new->provider != old->provider)
			continue;
		creds = old->credentials;
		old->credentials = new->credentials;
		new->credentials = creds;
		sources = old->auth_sources;
		n_sources = old->n_auth_sources;
		old->auth_sources = new->auth_sources;
		old->n_auth_sources = new->n_auth_sources;
		new->auth_sources = sources;
		new->n_auth_sources = n_sources;
		adopted++;
	}
	return adopted;
}
