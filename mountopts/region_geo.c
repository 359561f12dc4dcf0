/* Residency tags of the regions the embedded default knows (SPEC §3.4).
 * A region is tagged by where it processes data: the table errs towards
 * saying less, never towards eu for a region that is not in the EU. */
#include <string.h>

#include "mountopts/loader.h"

struct geo_rule {
	const char *pattern; /* exact name, or a prefix when it ends in '*' */
	const char *tag;
	const char *country; /* a second, narrower tag; NULL if none */
};

static const struct geo_rule aws_rules[] = {
	{ "eu-central-1", "eu", "de" }, { "us-gov-*", "us", NULL }, { "eu-*", "eu", NULL },
	{ "us-*", "us", NULL },		{ "ap-*", "apac", NULL },   { "ca-*", "ca", NULL },
	{ "sa-*", "sa", NULL },		{ "me-*", "me", NULL },	    { "il-*", "me", NULL },
	{ "af-*", "af", NULL },		{ NULL, NULL, NULL }
};

static const struct geo_rule azure_rules[] = {
	/* What the embedded default calls an Azure resource of unknown
	 * region; "Global" deployments process data anywhere. */
	{ "global", "global", NULL },
	{ "germanywestcentral", "eu", "de" },
	{ "germanynorth", "eu", "de" },
	{ "westeurope", "eu", NULL },
	{ "northeurope", "eu", NULL },
	{ "swedencentral", "eu", NULL },
	{ "francecentral", "eu", NULL },
	{ "francesouth", "eu", NULL },
	{ "italynorth", "eu", NULL },
	{ "polandcentral", "eu", NULL },
	{ "spaincentral", "eu", NULL },
	{ "eastus", "us", NULL },
	{ "eastus2", "us", NULL },
	{ "westus", "us", NULL },
	{ "westus2", "us", NULL },
	{ "westus3", "us", NULL },
	{ "centralus", "us", NULL },
	{ "northcentralus", "us", NULL },
	{ "southcentralus", "us", NULL },
	{ "westcentralus", "us", NULL },
	{ "uksouth", "uk", NULL },
	{ "ukwest", "uk", NULL },
	{ "switzerlandnorth", "ch", NULL },
	{ "norwayeast", "no", NULL },
	{ "canadaeast", "ca", NULL },
	{ "canadacentral", "ca", NULL },
	{ "japaneast", "apac", NULL },
	{ "australiaeast", "apac", NULL },
	{ "koreacentral", "apac", NULL },
	{ "southindia", "apac", NULL },
	{ NULL, NULL, NULL }
};

static const struct geo_rule gcp_rules[] = { { "global", "global", NULL },
					     { "europe-west3", "eu", "de" },
					     { "europe-west2", "uk", NULL },
					     { "europe-west6", "ch", NULL },
					     { "europe-*", "eu", NULL },
					     { "us-*", "us", NULL },
					     { "northamerica-*", "ca", NULL },
					     { "asia-*", "apac", NULL },
					     { "australia-*", "apac", NULL },
					     { "southamerica-*", "sa", NULL },
					     { "me-*", "me", NULL },
					     { "africa-*", "af", NULL },
					     { NULL, NULL, NULL } };

static int rule_matches(const struct geo_rule *rule, const char *region)
{
	size_t len = strlen(rule->pattern);

	if (rule->pattern[len - 1] == '*')
		return strncmp(region, rule->pattern, len - 1) == 0;
	return strcmp(region, rule->pattern) == 0;
}

size_t region_geo_tags(enum provider provider, const char *region, const char *tags[2])
{
	const struct geo_rule *rules = NULL;
	size_t i;

	switch (provider) {
	case PROVIDER_BEDROCK:
		rules = aws_rules;
		break;
	case PROVIDER_AZURE:
		rules = azure_rules;
		break;
	case PROVIDER_VERTEX:
		rules = gcp_rules;
		break;
	case PROVIDER_OPENAI:
	case PROVIDER_ANTHROPIC:
		/* Their public APIs process data in the United States. */
		tags[0] = "us";
		return 1;
	}
	for (i = 0; rules[i].pattern; i++) {
		if (!rule_matches(&rules[i], region))
			continue;
		tags[0] = rules[i].tag;
		if (!rules[i].country)
			return 1;
		tags[1] = rules[i].country;
		return 2;
	}
	tags[0] = region;
	return 1;
}
