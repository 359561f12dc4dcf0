/* Reading and searching the model catalog (SPEC §3.3). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mountopts/catalog.h"
#include "mountopts/loader.h"

static const char *const entry_keys[] = {
	"provider", "id", "family", "input_per_mtok", "output_per_mtok", "context_window", NULL
};

static int parse_entry(struct load_ctx *ctx, const char *path, json_t *obj,
		       struct catalog_entry *entry)
{
	char key_path[JSON_PATH_MAX];
	char *provider = NULL;
	json_t *window;
	int rc;

	if (!json_is_object(obj)) {
		rc = load_error(ctx, -EINVAL, path, "must be an object");
		goto out;
	}
	rc = check_keys(ctx, path, obj, entry_keys);
	if (rc < 0)
		goto out;

	rc = json_take_string(ctx, path, obj, "provider", &provider);
	if (rc < 0)
		goto out;
	json_path_join(key_path, path, "provider");
	if (rc == 0) {
		rc = load_error(ctx, -EINVAL, key_path, "required");
		goto out;
	}
	rc = provider_parse(provider, &entry->provider);
	if (rc < 0) {
		rc = load_error(ctx, rc, key_path,
				"must be one of openai, azure, bedrock, vertex, anthropic");
		goto out;
	}

	rc = json_take_string(ctx, path, obj, "id", &entry->id);
	if (rc < 0)
		goto out;
	if (rc == 0) {
		json_path_join(key_path, path, "id");
		rc = load_error(ctx, -EINVAL, key_path, "required");
		goto out;
	}
	rc = json_take_string(ctx, path, obj, "family", &entry->family);
	if (rc < 0)
		goto out;
	if (rc == 0) {
		/* A model with no family of its own stands in only for itself. */
		entry->family = strdup(entry->id);
		if (!entry->family) {
			rc = load_error(ctx, -ENOMEM, NULL, "out of memory");
			goto out;
		}
	}

	rc = json_take_price(ctx, path, obj, "input_per_mtok", &entry->input_per_mtok);
	if (rc < 0)
		goto out;
	rc = json_take_price(ctx, path, obj, "output_per_mtok", &entry->output_per_mtok);
	if (rc < 0)
		goto out;

	window = json_object_get(obj, "context_window");
	if (window) {
		json_path_join(key_path, path, "context_window");
		if (!json_is_integer(window) || json_integer_value(window) < 1) {
			rc = load_error(ctx, -EINVAL, key_path, "must be an integer >= 1");
			goto out;
		}
		entry->context_window = (long)json_integer_value(window);
	}
	rc = 0;
out:
	free(provider);
	return rc;
}

static int parse_catalog(struct load_ctx *ctx, json_t *root, struct catalog *cat)
{
	char path[JSON_PATH_MAX];
	size_t i, j;
	int rc;

	if (!json_is_array(root))
		return load_error(ctx, -EINVAL, NULL, "top level: must be a list of models");
	cat->entries = calloc(json_array_size(root) + 1, sizeof(*cat->entries));
	if (!cat->entries)
		return load_error(ctx, -ENOMEM, NULL, "out of memory");

	for (i = 0; i < json_array_size(root); i++) {
		snprintf(path, sizeof(path), "[%zu]", i);
		/* Counted before parsing so that catalog_free() releases a
		 * half-filled entry too. */
		cat->n_entries = i + 1;
		rc = parse_entry(ctx, path, json_array_get(root, i), &cat->entries[i]);
		if (rc < 0)
			return rc;
		for (j = 0; j < i; j++) {
			if (cat->entries[j].provider == cat->entries[i].provider &&
			    strcmp(cat->entries[j].id, cat->entries[i].id) == 0)
				return load_error(ctx, -EINVAL, path,
						  "duplicate of [%zu] (same provider and id)", j);
		}
	}
	return 0;
}

int catalog_parse(const char *file, const char *text, size_t len, struct catalog **out,
		  char err[CONFIG_ERROR_MAX])
{
	struct load_ctx ctx = { .file = file, .err = err };
	struct catalog *cat = NULL;
	json_error_t error;
	json_t *root;
	int rc;

	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &error);
	if (!root) {
		rc = load_syntax_error(&ctx, &error);
		goto out;
	}
	cat = calloc(1, sizeof(*cat));
	if (!cat) {
		rc = load_error(&ctx, -ENOMEM, NULL, "out of memory");
		goto out;
	}
	rc = parse_catalog(&ctx, root, cat);
	if (rc < 0)
		goto out;
	*out = cat;
	cat = NULL;
out:
	catalog_free(cat);
	json_decref(root);
	return rc;
}

/* Reads all of FD into a new NUL-terminated buffer (caller frees). */
static int read_all(int fd, char **out, size_t *out_len)
{
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap), *bigger;
	ssize_t got;
	int rc;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (cap - len < 2) {
			bigger = realloc(buf, cap * 2);
			if (!bigger) {
				rc = -ENOMEM;
				goto out;
			}
			buf = bigger;
			cap *= 2;
		}
		got = read(fd, buf + len, cap - len - 1);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			rc = -errno;
			goto out;
		}
		if (got == 0)
			break;
		len += (size_t)got;
	}
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	return rc;
}

int catalog_load(const char *path, struct catalog **out, char err[CONFIG_ERROR_MAX])
{
	char *text = NULL;
	size_t len = 0;
	int fd = -1;
	int rc;

	if (!path)
		return catalog_parse("built-in catalog", catalog_builtin_json,
				     strlen(catalog_builtin_json), out, err);

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, CONFIG_ERROR_MAX, "%s: cannot open: %s", path, strerror(-rc));
		goto out;
	}
	rc = read_all(fd, &text, &len);
	if (rc < 0) {
		snprintf(err, CONFIG_ERROR_MAX, "%s: cannot read: %s", path, strerror(-rc));
		goto out;
	}
	rc = catalog_parse(path, text, len, out, err);
out:
	free(text);
	if (fd >= 0)
		close(fd);
	return rc;
}

void catalog_free(struct catalog *cat)
{
	size_t i;

	if (!cat)
		return;
	for (i = 0; i < cat->n_entries; i++) {
		free(cat->entries[i].id);
		free(cat->entries[i].family);
	}
	free(cat->entries);
	free(cat);
}

static const struct catalog_entry *find_exact(const struct catalog *cat, enum provider provider,
					      const char *id)
{
	size_t i;

	for (i = 0; i < cat->n_entries; i++) {
		if (cat->entries[i].provider == provider && strcmp(cat->entries[i].id, id) == 0)
			return &cat->entries[i];
	}
	return NULL;
}

const struct catalog_entry *catalog_find(const struct catalog *cat, enum provider provider,
					 const char *id)
{
	static const char *const profile_prefixes[] = { "us.",	   "eu.",     "apac.",
							"us-gov.", "global.", NULL };
	const struct catalog_entry *entry;
	size_t i, n;

	if (!cat || !id)
		return NULL;
	entry = find_exact(cat, provider, id);
	if (entry || provider != PROVIDER_BEDROCK)
		return entry;
	for (i = 0; profile_prefixes[i]; i++) {
		n = strlen(profile_prefixes[i]);
		if (strncmp(id, profile_prefixes[i], n) == 0)
			return find_exact(cat, provider, id + n);
	}
	return NULL;
}
