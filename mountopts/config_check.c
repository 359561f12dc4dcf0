/* promptfs --check CONFIG: every rule of the config loader, every error
 * reported, no secret required (issue 10 item 15). It runs the loader
 * itself in check mode (load_ctx.report), so that a rule cannot exist
 * for the mount and be missing here. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mountopts/catalog.h"
#include "mountopts/config.h"
#include "mountopts/loader.h"

static void count_tree(const struct config *cfg, struct config_report *report)
{
	size_t i, j;

	report->n_clouds = cfg->n_clouds;
	for (i = 0; i < cfg->n_clouds; i++) {
		report->n_regions += cfg->clouds[i].n_regions;
		for (j = 0; j < cfg->clouds[i].n_regions; j++)
			report->n_models += cfg->clouds[i].regions[j].n_models;
	}
}

int config_check(const char *path, const char *catalog_path, struct config_report *report)
{
	char err[CONFIG_ERROR_MAX] = "";
	struct load_ctx ctx = { .file = path, .err = err, .report = report };
	struct catalog *catalog = NULL;
	struct config *cfg = NULL;
	int rc;

	memset(report, 0, sizeof(*report));
	/* A bad catalog is one error: the models cannot be checked
	 * against it. catalog_load does not know the report. */
	rc = catalog_load(catalog_path, &catalog, err);
	if (rc < 0) {
		config_report_add(report, err);
		goto out;
	}
	ctx.catalog = catalog;
	rc = config_read(&ctx, path, &cfg);
	if (rc == 0 && !report->n_errors && !report->n_lost)
		count_tree(cfg, report);
out:
	config_free(cfg);
	catalog_free(catalog);
	if (rc == -ENOMEM)
		return rc;
	return report->n_errors || report->n_lost ? -EINVAL : 0;
}

void config_report_release(struct config_report *report)
{
	size_t i;

	for (i = 0; i < report->n_errors; i++)
		free(report->errors[i]);
	free(report->errors);
	memset(report, 0, sizeof(*report));
}

static const char *plural(size_t n, const char *one, const char *many)
{
	return n == 1 ? one : many;
}

int config_check_command(const char *path, const char *catalog_path, FILE *out, FILE *err)
{
	struct config_report report;
	size_t i;
	int rc;

	rc = config_check(path, catalog_path, &report);
	for (i = 0; i < report.n_errors; i++)
		fprintf(err, "promptfs: %s\n", report.errors[i]);
	if (rc == -ENOMEM || report.n_lost)
		fprintf(err, "promptfs: %s: out of memory: not every error could be reported\n",
			path);
	if (rc < 0) {
		if (report.n_errors)
			fprintf(err, "promptfs: %s: %zu %s\n", path, report.n_errors,
				plural(report.n_errors, "error", "errors"));
		config_report_release(&report);
		return 1;
	}
	fprintf(out, "%s: OK: %zu %s, %zu %s, %zu %s", path, report.n_clouds,
		plural(report.n_clouds, "cloud", "clouds"), report.n_regions,
		plural(report.n_regions, "region", "regions"), report.n_models,
		plural(report.n_models, "model", "models"));
	if (report.secrets_absent)
		fprintf(out, "; %zu %s not present here, not checked", report.secrets_absent,
			plural(report.secrets_absent, "secret", "secrets"));
	fprintf(out, "\n");
	config_report_release(&report);
	return 0;
}
