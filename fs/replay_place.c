#include "fs/replay_place.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *replay_place_key(const char *path, const char *base)
{
	char *key = NULL;

	if (asprintf(&key, "%s\n%s", path, base) < 0)
		return NULL;
	return key;
}

const char *replay_entry_base(const json_t *entry)
{
	return json_string_value(json_object_get(json_object_get(entry, "job"), "base"));
}

/* PATH under FROM (or FROM itself) with TO's prefix; NULL if not under. */
static char *moved_path(const char *path, const char *from, const char *to)
{
	size_t n = strlen(from);
	char *out = NULL;

	if (strncmp(path, from, n) != 0 || (path[n] != '\0' && path[n] != '/'))
		return NULL;
	if (asprintf(&out, "%s%s", to, path + n) < 0)
		return NULL;
	return out;
}

char *replay_path_after_move(const char *path, const char *from, const char *to, int exchange)
{
	char *now;

	if (!path)
		return NULL;
	now = moved_path(path, from, to);
	if (!now && exchange)
		now = moved_path(path, to, from);
	return now;
}
