/* Error sentences and small checks shared by the mountopts readers. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mountopts/loader.h"

void format_into(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, size, fmt, ap);
	va_end(ap);
}

void config_report_add(struct config_report *report, const char *message)
{
	char **grown;
	char *copy;

	copy = strdup(message);
	grown = copy ? realloc(report->errors, (report->n_errors + 1) * sizeof(*grown)) : NULL;
	if (!grown) {
		free(copy);
		report->n_lost++;
		return;
	}
	report->errors = grown;
	report->errors[report->n_errors++] = copy;
}

int load_error(struct load_ctx *ctx, int rc, const char *path, const char *fmt, ...)
{
	char reason[CONFIG_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);

	if (path && *path)
		format_into(ctx->err, CONFIG_ERROR_MAX, "%s: %s: %s", ctx->file, path, reason);
	else
		format_into(ctx->err, CONFIG_ERROR_MAX, "%s: %s", ctx->file, reason);
	if (ctx->report)
		config_report_add(ctx->report, ctx->err);
	return rc;
}

int load_recover(struct load_ctx *ctx, int rc)
{
	if (rc >= 0 || rc == -ENOMEM || !ctx->report)
		return rc;
	return 0;
}

int load_secret_absent(struct load_ctx *ctx)
{
	if (!ctx->report)
		return 0;
	ctx->report->secrets_absent++;
	return 1;
}

int load_syntax_error(struct load_ctx *ctx, const json_error_t *error)
{
	char text[JSON_ERROR_TEXT_LENGTH];
	char *near;

	if (json_error_code(error) == json_error_out_of_memory)
		return load_error(ctx, -ENOMEM, NULL, "out of memory");
	snprintf(text, sizeof(text), "%s", error->text);
	near = strstr(text, " near '");
	if (near)
		*near = '\0';
	if (error->line < 0)
		return load_error(ctx, -EINVAL, NULL, "%s", text);
	return load_error(ctx, -EINVAL, NULL, "line %d column %d: %s", error->line, error->column,
			  text);
}

void json_path_join(char out[JSON_PATH_MAX], const char *parent, const char *key)
{
	if (parent && *parent)
		format_into(out, JSON_PATH_MAX, "%s.%s", parent, key);
	else
		format_into(out, JSON_PATH_MAX, "%s", key);
}

int check_keys(struct load_ctx *ctx, const char *path, json_t *obj, const char *const allowed[])
{
	char key_path[JSON_PATH_MAX];
	const char *key;
	json_t *value;
	size_t i;
	int rc = 0;

	json_object_foreach (obj, key, value) {
		int known = 0;

		for (i = 0; allowed[i]; i++) {
			if (strcmp(key, allowed[i]) == 0) {
				known = 1;
				break;
			}
		}
		if (!known) {
			json_path_join(key_path, path, key);
			rc = load_error(ctx, -EINVAL, key_path, "unknown key");
			if (!ctx->report)
				break;
		}
	}
	return rc;
}

int check_file_name(struct load_ctx *ctx, const char *path, const char *name, size_t len)
{
	const char *why = NULL;

	if (len == 0)
		why = "is empty";
	else if (strlen(name) != len)
		why = "contains a NUL byte";
	else if (strchr(name, '/'))
		why = "contains '/'";
	else if (name[0] == '.')
		why = "starts with '.'";
	else if (len > 255)
		why = "is longer than 255 bytes";

	if (why)
		return load_error(ctx, -EINVAL, path, "not a valid file name: the name %s", why);
	return 0;
}

int json_take_string(struct load_ctx *ctx, const char *path, json_t *obj, const char *key,
		     char **out)
{
	char key_path[JSON_PATH_MAX];
	json_t *value = json_object_get(obj, key);
	char *copy;

	if (!value)
		return 0;
	json_path_join(key_path, path, key);
	if (!json_is_string(value))
		return load_error(ctx, -EINVAL, key_path, "must be a string");
	if (json_string_length(value) == 0)
		return load_error(ctx, -EINVAL, key_path, "must not be empty");
	if (strlen(json_string_value(value)) != json_string_length(value))
		return load_error(ctx, -EINVAL, key_path, "must not contain a NUL byte");
	copy = strdup(json_string_value(value));
	if (!copy)
		return load_error(ctx, -ENOMEM, NULL, "out of memory");
	*out = copy;
	return 1;
}

int json_take_price(struct load_ctx *ctx, const char *path, json_t *obj, const char *key,
		    double *out)
{
	char key_path[JSON_PATH_MAX];
	json_t *value = json_object_get(obj, key);

	json_path_join(key_path, path, key);
	if (!value)
		return load_error(ctx, -EINVAL, key_path, "required");
	if (!json_is_number(value) || json_number_value(value) < 0)
		return load_error(ctx, -EINVAL, key_path, "must be a number >= 0");
	*out = json_number_value(value);
	return 0;
}

char *resolve_path(const struct load_ctx *ctx, const char *path)
{
	char *joined;

	if (path[0] == '/' || !ctx->dir)
		return strdup(path);
	if (asprintf(&joined, "%s/%s", ctx->dir, path) < 0)
		return NULL;
	return joined;
}

void secret_free(char *secret)
{
	if (!secret)
		return;
	explicit_bzero(secret, strlen(secret));
	free(secret);
}
