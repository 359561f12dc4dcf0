/* Job file names. */
#include "fs/names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const role_suffixes[] = {
	[ROLE_PROMPT] = ".prompt",
	[ROLE_RESPONSE] = ".response",
	[ROLE_META] = ".meta",
	[ROLE_ERROR] = ".error",
};

static int has_suffix(const char *name, const char *suffix)
{
	size_t n = strlen(name), s = strlen(suffix);

	return n > s && strcmp(name + n - s, suffix) == 0;
}

enum file_role file_role_of(const char *name)
{
	for (int role = ROLE_PROMPT; role <= ROLE_ERROR; role++) {
		if (has_suffix(name, role_suffixes[role]))
			return (enum file_role)role;
	}
	return ROLE_PLAIN;
}

char *name_strip_suffix(const char *name, const char *suffix)
{
	if (!has_suffix(name, suffix))
		return NULL;
	return strndup(name, strlen(name) - strlen(suffix));
}

char *name_with_suffix(const char *base, const char *suffix)
{
	char *name = NULL;

	if (asprintf(&name, "%s%s", base, suffix) < 0)
		return NULL;
	return name;
}

char *name_job_base(const char *name)
{
	enum file_role role = file_role_of(name);

	if (role == ROLE_PLAIN)
		return NULL;
	return name_strip_suffix(name, role_suffixes[role]);
}
