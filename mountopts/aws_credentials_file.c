/* The AWS shared credentials file (~/.aws/credentials): an INI file
 * with one [section] per profile and aws_* keys in it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mountopts/credentials.h"

static char *trim(char *s)
{
	char *end;

	while (*s == ' ' || *s == '\t' || *s == '\r')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		end--;
	*end = '\0';
	return s;
}

/* Replaces *SLOT with a copy of VALUE; a later line wins, as in the AWS
 * tools. */
static int set_secret(char **slot, const char *value)
{
	char *copy = strdup(value);

	if (!copy)
		return -ENOMEM;
	secret_free(*slot);
	*slot = copy;
	return 0;
}

/* Scans TEXT (modified in place) for PROFILE. Returns 1 when the section
 * was found, 0 when not, -ENOMEM. */
static int scan_profile(char *text, const char *profile, struct credentials *creds)
{
	int in_profile = 0, found = 0;
	char *save = NULL, *line, *key, *value, *eq;
	int rc = 0;

	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		line = trim(line);
		if (*line == '\0' || *line == '#' || *line == ';')
			continue;
		if (*line == '[') {
			char *close = strchr(line, ']');

			if (!close) {
				in_profile = 0;
				continue;
			}
			*close = '\0';
			key = trim(line + 1);
			/* ~/.aws/config spells sections "[profile NAME]";
			 * people copy them over, so take that too. */
			if (strncmp(key, "profile ", 8) == 0)
				key = trim(key + 8);
			in_profile = strcmp(key, profile) == 0;
			found |= in_profile;
			continue;
		}
		if (!in_profile)
			continue;
		eq = strchr(line, '=');
		if (!eq)
			continue;
		*eq = '\0';
		key = trim(line);
		value = trim(eq + 1);
		if (*value == '\0')
			continue;
		if (strcasecmp(key, "aws_access_key_id") == 0)
			rc = set_secret(&creds->aws_access_key_id, value);
		else if (strcasecmp(key, "aws_secret_access_key") == 0)
			rc = set_secret(&creds->aws_secret_access_key, value);
		else if (strcasecmp(key, "aws_session_token") == 0)
			rc = set_secret(&creds->aws_session_token, value);
		if (rc < 0)
			return rc;
	}
	return found;
}

int aws_profile_read(struct load_ctx *ctx, const char *path, const char *prefix, const char *file,
		     const char *profile, struct credentials *creds)
{
	char *text = NULL;
	size_t len = 0;
	int rc;

	rc = secret_file_read(ctx, path, prefix, file, &text, &len);
	if (rc < 0 || !text) /* !text: absent, in check mode */
		goto out;
	rc = scan_profile(text, profile, creds);
	if (rc < 0) {
		rc = load_error(ctx, rc, NULL, "out of memory");
		goto out;
	}
	if (rc == 0) {
		rc = load_error(ctx, -EINVAL, path, "%s%s has no profile [%s]", prefix, file,
				profile);
		goto out;
	}
	if (!creds->aws_access_key_id || !creds->aws_secret_access_key) {
		rc = load_error(
			ctx, -EINVAL, path,
			"%s%s: profile [%s] needs aws_access_key_id and aws_secret_access_key",
			prefix, file, profile);
		goto out;
	}
	rc = 0;
out:
	if (text) {
		explicit_bzero(text, len);
		free(text);
	}
	return rc;
}
