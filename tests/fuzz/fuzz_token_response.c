/* libFuzzer target for google_token_response_parse(): bytes 0-1 are the
 * HTTP status, the rest the token endpoint's body, handed over
 * NUL-terminated as the engine does. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/google_auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct attempt_error err;
	char *token = NULL;
	long expires_in = -12345;
	long status;
	char *body;
	int rc;

	if (len < 2)
		return 0;
	status = (long)((data[0] << 8 | data[1]) % 1000);
	data += 2;
	len -= 2;
	body = malloc(len + 1);
	if (!body)
		return 0;
	memcpy(body, data, len);
	body[len] = '\0';
	memset(&err, 0x5a, sizeof(err));
	rc = google_token_response_parse(status, body, len, &token, &expires_in, &err);
	free(body);

	if (rc == 0) {
		if (!token || token[0] == '\0' || strlen(token) > GOOGLE_TOKEN_MAX_BYTES)
			abort();
		if (expires_in <= 0)
			abort();
		google_secret_free(token);
	} else {
		if (rc != -EIO || token)
			abort();
		if ((unsigned)err.outcome >= OUTCOME_COUNT ||
		    !memchr(err.message, '\0', sizeof(err.message)))
			abort();
		if (err.message[0] == '\0' || strchr(err.message, '\n'))
			abort();
		if (isnan(err.retry_after_s))
			abort();
	}
	return 0;
}
