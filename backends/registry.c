/* Which table serves which provider. Kept apart from request.c so that
 * code needing only the request types does not pull in every backend. */
#include "backends/backend.h"

const struct backend *backend_for(enum provider p)
{
	switch (p) {
	case PROVIDER_OPENAI:
		return &backend_openai;
	case PROVIDER_AZURE:
		return &backend_azure;
	case PROVIDER_BEDROCK:
		return &backend_bedrock;
	case PROVIDER_VERTEX:
		return &backend_vertex;
	case PROVIDER_ANTHROPIC:
		return &backend_anthropic;
	}
	return NULL;
}
