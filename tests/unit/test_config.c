/* Unit tests of the config loader (mountopts/): the file format, its
 * error sentences, credentials, the catalog, the embedded default and
 * --print-config.
 *
 * Fixtures live in $PROMPTFS_TEST_DATA/config (default: TEST_DATA_DIR,
 * set by the build to tests/data in the source tree). Files whose mode
 * matters are written at run time into a fresh temporary directory,
 * which is also $HOME, since git does not keep modes. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "mountopts/catalog.h"
#include "mountopts/config.h"

#ifndef TEST_DATA_DIR
#define TEST_DATA_DIR "tests/data"
#endif

#define PATH_LEN 4096

static char tmp_dir[PATH_LEN];

/* snprintf for test paths and messages, which fit; a cut one would fail
 * its comparison anyway. */
static void fmt(char *buf, size_t size, const char *format, ...)
	__attribute__((format(printf, 3, 4)));

static void fmt(char *buf, size_t size, const char *format, ...)
{
	va_list ap;

	va_start(ap, format);
	vsnprintf(buf, size, format, ap);
	va_end(ap);
}

/* Every variable the loader reads, cleared before each test so that the
 * developer's own credentials never leak into a result. */
static const char *const loader_env[] = { "OPENAI_API_KEY",
					  "OPENAI_BASE_URL",
					  "ANTHROPIC_API_KEY",
					  "AZURE_OPENAI_ENDPOINT",
					  "AZURE_OPENAI_API_KEY",
					  "AZURE_OPENAI_REGION",
					  "AWS_ACCESS_KEY_ID",
					  "AWS_SECRET_ACCESS_KEY",
					  "AWS_SESSION_TOKEN",
					  "AWS_PROFILE",
					  "AWS_SHARED_CREDENTIALS_FILE",
					  "AWS_REGION",
					  "AWS_DEFAULT_REGION",
					  "GOOGLE_APPLICATION_CREDENTIALS",
					  "GOOGLE_CLOUD_PROJECT",
					  "GOOGLE_CLOUD_LOCATION",
					  "OLLAMA_HOST",
					  "PROMPTFS_TEST_AZURE_KEY",
					  "PROMPTFS_TEST_AWS_ID",
					  "PROMPTFS_TEST_AWS_SECRET",
					  "PROMPTFS_TEST_GCP_TOKEN",
					  "PROMPTFS_TEST_OPENAI_KEY",
					  "PROMPTFS_TEST_ANTHROPIC_KEY",
					  "PROMPTFS_TEST_UNSET",
					  NULL };

static const char *data_dir(void)
{
	const char *dir = getenv("PROMPTFS_TEST_DATA");

	return dir && *dir ? dir : TEST_DATA_DIR;
}

static void fixture(char out[PATH_LEN], const char *name)
{
	fmt(out, PATH_LEN, "%s/config/%s", data_dir(), name);
}

/* Writes CONTENT to NAME under the temporary directory with exactly
 * MODE, and puts its path in OUT. */
static void tmp_file(char out[PATH_LEN], const char *name, const char *content, mode_t mode)
{
	int fd;

	fmt(out, PATH_LEN, "%s/%s", tmp_dir, name);
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	/* The umask must not decide what the test checks. */
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void tmp_mkdir(const char *name)
{
	char path[PATH_LEN];

	fmt(path, sizeof(path), "%s/%s", tmp_dir, name);
	assert_int_equal(mkdir(path, 0700), 0);
}

/* A one-cloud openai config with AUTH (JSON text, may be "") and
 * ENDPOINT (may be NULL). */
static void openai_config(char out[PATH_LEN], const char *name, const char *auth,
			  const char *endpoint, mode_t mode)
{
	char text[2048], endpoint_json[512] = "";

	if (endpoint)
		fmt(endpoint_json, sizeof(endpoint_json), "\"endpoint\": \"%s\", ", endpoint);
	fmt(text, sizeof(text),
	    "{ \"clouds\": { \"openai\": { \"provider\": \"openai\", %s%s"
	    "\"regions\": { \"us\": { \"geo\": \"us\", %s"
	    "\"models\": { \"gpt-4o\": {} } } } } } }\n",
	    auth, *auth ? ", " : "", endpoint_json);
	tmp_file(out, name, text, mode);
}

static int setup(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; loader_env[i]; i++)
		unsetenv(loader_env[i]);
	fmt(tmp_dir, sizeof(tmp_dir), "/tmp/promptfs-test-config-XXXXXX");
	if (!mkdtemp(tmp_dir))
		return -1;
	setenv("HOME", tmp_dir, 1);
	/* Nothing listens on port 1: the local probe finds no server. */
	setenv("OLLAMA_HOST", "127.0.0.1:1", 1);
	return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int teardown(void **state)
{
	(void)state;
	return nftw(tmp_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Loads PATH, expects failure, and checks the sentence is exactly
 * "PATH: SUFFIX". */
static void expect_error(const char *path, const char *catalog, const char *suffix)
{
	char err[CONFIG_ERROR_MAX] = "", expected[CONFIG_ERROR_MAX];
	struct config *cfg = NULL;
	int rc;

	rc = config_load(path, catalog, &cfg, err);
	if (rc >= 0)
		config_free(cfg);
	assert_true(rc < 0);
	fmt(expected, sizeof(expected), "%s: %s", path, suffix);
	assert_string_equal(err, expected);
}

static struct config *load_ok(const char *path, const char *catalog)
{
	char err[CONFIG_ERROR_MAX] = "";
	struct config *cfg = NULL;
	int rc;

	rc = config_load(path, catalog, &cfg, err);
	if (rc < 0)
		print_error("unexpected error: %s\n", err);
	assert_int_equal(rc, 0);
	assert_non_null(cfg);
	return cfg;
}

static const struct cloud *find_cloud(const struct config *cfg, const char *name)
{
	size_t i;

	for (i = 0; i < cfg->n_clouds; i++) {
		if (strcmp(cfg->clouds[i].name, name) == 0)
			return &cfg->clouds[i];
	}
	return NULL;
}

static void set_valid_env(void)
{
	setenv("PROMPTFS_TEST_AZURE_KEY", "azure-SECRET-1", 1);
	setenv("PROMPTFS_TEST_AWS_ID", "AKIDEXAMPLE", 1);
	setenv("PROMPTFS_TEST_AWS_SECRET", "aws-SECRET-2", 1);
	setenv("PROMPTFS_TEST_GCP_TOKEN", "ya29.gcp-SECRET-3", 1);
	setenv("PROMPTFS_TEST_OPENAI_KEY", "sk-openai-SECRET-4", 1);
	setenv("PROMPTFS_TEST_ANTHROPIC_KEY", "sk-ant-SECRET-5", 1);
}

static void test_valid_full(void **state)
{
	const struct model *m;
	const struct cloud *c;
	struct config *cfg;
	char path[PATH_LEN];

	(void)state;
	set_valid_env();
	fixture(path, "valid.json");
	cfg = load_ok(path, NULL);
	assert_string_equal(cfg->path, path);
	assert_int_equal(cfg->n_clouds, 6);

	c = find_cloud(cfg, "azure");
	assert_non_null(c);
	assert_int_equal(c->provider, PROVIDER_AZURE);
	assert_string_equal(c->credentials.api_key, "azure-SECRET-1");
	assert_string_equal(c->regions[0].endpoint, "https://contoso-weu.openai.azure.com");
	m = config_find_model(cfg, "azure", "westeurope", "gpt-4o");
	assert_non_null(m);
	assert_string_equal(m->id, "gpt-4o-prod");
	assert_string_equal(m->api_version, "2024-10-21");
	assert_true(m->price.known);
	assert_true(m->price.input_per_mtok == 2.75);
	assert_true(m->price.output_per_mtok == 11.0);
	assert_ptr_equal(m->region, &c->regions[0]);
	assert_ptr_equal(m->region->cloud, c);
	/* Unknown deployment name: the directory name finds the price. */
	m = config_find_model(cfg, "azure", "westeurope", "gpt-4o-mini");
	assert_non_null(m);
	assert_string_equal(m->id, "mini-deployment");
	assert_string_equal(m->family, "gpt-4o-mini");
	assert_true(m->price.known);
	assert_true(m->price.input_per_mtok == 0.165);

	c = find_cloud(cfg, "aws");
	assert_int_equal(c->provider, PROVIDER_BEDROCK);
	assert_string_equal(c->credentials.aws_access_key_id, "AKIDEXAMPLE");
	assert_string_equal(c->credentials.aws_secret_access_key, "aws-SECRET-2");
	assert_null(c->credentials.aws_session_token);
	assert_int_equal(c->regions[0].n_geo, 2);
	assert_string_equal(c->regions[0].geo[0], "eu");
	assert_string_equal(c->regions[0].geo[1], "de");
	assert_string_equal(c->regions[0].endpoint,
			    "https://bedrock-runtime.eu-central-1.amazonaws.com");
	m = config_find_model(cfg, "aws", "eu-central-1", "claude-sonnet");
	assert_string_equal(m->family, "claude-sonnet");
	assert_true(m->price.known && m->price.input_per_mtok == 3.0 &&
		    m->price.output_per_mtok == 15.0);
	assert_null(m->api_version);
	m = config_find_model(cfg, "aws", "eu-central-1", "nova-pro");
	assert_string_equal(m->family, "nova-pro");
	assert_int_equal(m->max_output_tokens, 4096);
	assert_true(m->price.input_per_mtok == 0.80);

	c = find_cloud(cfg, "gcp");
	assert_int_equal(c->provider, PROVIDER_VERTEX);
	assert_string_equal(c->project, "acme-prod");
	assert_string_equal(c->credentials.bearer_token, "ya29.gcp-SECRET-3");
	assert_string_equal(c->regions[0].endpoint,
			    "https://europe-west4-aiplatform.googleapis.com");
	assert_string_equal(c->regions[1].name, "global");
	assert_string_equal(c->regions[1].endpoint, "https://aiplatform.googleapis.com");
	m = config_find_model(cfg, "gcp", "europe-west4", "gemini-2.0-flash");
	assert_string_equal(m->id, "gemini-2.0-flash");
	assert_true(m->price.input_per_mtok == 0.10 && m->price.output_per_mtok == 0.40);

	c = find_cloud(cfg, "openai");
	assert_string_equal(c->credentials.api_key, "sk-openai-SECRET-4");
	assert_string_equal(c->regions[0].endpoint, "https://api.openai.com/v1");
	m = config_find_model(cfg, "openai", "us", "gpt-4o");
	assert_true(m->price.input_per_mtok == 2.50 && m->price.output_per_mtok == 10.00);
	assert_int_equal(m->max_output_tokens, 0);

	c = find_cloud(cfg, "anthropic");
	assert_string_equal(c->credentials.api_key, "sk-ant-SECRET-5");
	assert_string_equal(c->regions[0].endpoint, "https://api.anthropic.com");
	m = config_find_model(cfg, "anthropic", "us", "claude-sonnet");
	assert_string_equal(m->id, "claude-sonnet-4-20250514");
	assert_string_equal(m->family, "claude-sonnet");

	c = find_cloud(cfg, "local");
	assert_null(c->credentials.api_key);
	m = config_find_model(cfg, "local", "localhost", "llama3.2");
	assert_string_equal(m->family, "llama3.2");
	assert_false(m->price.known);

	assert_null(config_find_model(cfg, "local", "localhost", "nope"));
	assert_null(config_find_model(cfg, "any", "eu", "gpt-4o"));
	config_free(cfg);
}

struct bad_case {
	const char *file;
	const char *message;
};

static const struct bad_case bad_cases[] = {
	{ "syntax_error.json", "line 4 column 3: unexpected token" },
	{ "duplicate_key.json", "line 3 column 48: duplicate object key" },
	{ "top_level_list.json", "top level: must be an object" },
	{ "no_clouds.json", "clouds: required" },
	{ "empty_clouds.json", "clouds: at least one cloud is required" },
	{ "unknown_top_key.json", "cloudz: unknown key" },
	{ "unknown_cloud_key.json", "clouds.openai.regionz: unknown key" },
	{ "unknown_region_key.json", "clouds.openai.regions.us.endpoints: unknown key" },
	{ "unknown_model_key.json",
	  "clouds.openai.regions.us.models.gpt-4o.temperature: unknown key" },
	{ "unknown_price_key.json",
	  "clouds.openai.regions.us.models.gpt-4o.price.cached_per_mtok: unknown key" },
	{ "unknown_auth_key.json", "clouds.openai.auth.token: unknown key" },
	{ "foreign_auth_key.json",
	  "clouds.openai.auth.profile: not an auth key for provider openai" },
	{ "auth_not_object.json", "clouds.openai.auth: must be an object" },
	{ "bad_provider.json",
	  "clouds.openai.provider: must be one of openai, azure, bedrock, vertex, anthropic" },
	{ "missing_provider.json", "clouds.openai.provider: required" },
	{ "geo_missing.json", "clouds.aws.regions.eu-central-1.geo: required" },
	{ "geo_empty_list.json", "clouds.openai.regions.us.geo: must not be an empty list" },
	{ "geo_number.json",
	  "clouds.openai.regions.us.geo: must be a string or a list of strings" },
	{ "geo_empty_tag.json", "clouds.openai.regions.us.geo[1]: must be a non-empty string" },
	{ "geo_slash.json",
	  "clouds.openai.regions.us.geo: not a valid file name: the name contains '/'" },
	{ "reserved_any.json", "clouds.any: the name \"any\" is reserved for the routed view" },
	{ "name_slash.json",
	  "clouds.openai.regions.eu/west: not a valid file name: the name contains '/'" },
	{ "name_dot.json", "clouds.openai.regions.us.models..hidden: not a valid file name: the "
			   "name starts with '.'" },
	{ "name_empty.json", "clouds.: not a valid file name: the name is empty" },
	{ "azure_no_endpoint.json",
	  "clouds.azure.regions.westeurope.endpoint: required for provider azure" },
	{ "bad_endpoint.json",
	  "clouds.openai.regions.us.endpoint: must start with http:// or https://" },
	{ "empty_models.json", "clouds.openai.regions.us.models: at least one model is required" },
	{ "empty_regions.json", "clouds.openai.regions: at least one region is required" },
	{ "region_not_object.json", "clouds.openai.regions.us: must be an object" },
	{ "price_negative.json",
	  "clouds.openai.regions.us.models.gpt-4o.price.input_per_mtok: must be a number >= 0" },
	{ "price_incomplete.json",
	  "clouds.openai.regions.us.models.gpt-4o.price.output_per_mtok: required" },
	{ "max_tokens_zero.json",
	  "clouds.openai.regions.us.models.gpt-4o.max_output_tokens: must be an integer >= 1" },
	{ "max_tokens_real.json",
	  "clouds.openai.regions.us.models.gpt-4o.max_output_tokens: must be an integer >= 1" },
	{ "api_version_openai.json",
	  "clouds.openai.regions.us.models.gpt-4o.api_version: only for provider azure" },
	{ "family_slash.json", "clouds.openai.regions.us.models.gpt-4o.family: not a valid file "
			       "name: the name contains '/'" },
	{ "id_empty.json", "clouds.openai.regions.us.models.gpt-4o.id: must not be empty" },
	{ "vertex_no_project.json", "clouds.gcp.project: required for provider vertex" },
	{ "project_on_openai.json", "clouds.openai.project: only for provider vertex" },
	{ "env_unset.json",
	  "clouds.openai.auth.api_key_env: environment variable PROMPTFS_TEST_UNSET is not set" },
	{ "env_name_is_secret.json",
	  "clouds.openai.auth.api_key_env: not a valid environment variable name" },
	{ "auth_conflict.json",
	  "clouds.openai.auth.api_key_file: conflicts with clouds.openai.auth.api_key_env" },
	{ "anthropic_no_key.json",
	  "clouds.anthropic.auth: absent, and environment variable ANTHROPIC_API_KEY is not set" },
	{ "azure_no_key.json",
	  "clouds.azure.auth: absent, and environment variable AZURE_OPENAI_API_KEY is not set" },
	{ "vertex_both_auth.json",
	  "clouds.gcp.auth: give either service_account_file or an access token, not both" },
};

static void test_invalid_fixtures(void **state)
{
	char path[PATH_LEN];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		fixture(path, bad_cases[i].file);
		expect_error(path, NULL, bad_cases[i].message);
	}
}

static void test_name_too_long(void **state)
{
	char path[PATH_LEN], message[1024], name[257];

	(void)state;
	memset(name, 'm', 256);
	name[256] = '\0';
	fmt(message, sizeof(message),
	    "clouds.openai.regions.us.models.%s: not a valid file name: the name is longer than "
	    "255 bytes",
	    name);
	fixture(path, "name_too_long.json");
	expect_error(path, NULL, message);
}

static void test_missing_file(void **state)
{
	char path[PATH_LEN];

	(void)state;
	fmt(path, sizeof(path), "%s/absent.json", tmp_dir);
	expect_error(path, NULL, "cannot open: No such file or directory");
}

static void test_env_name_never_echoed(void **state)
{
	char path[PATH_LEN], err[CONFIG_ERROR_MAX];
	struct config *cfg = NULL;

	(void)state;
	fixture(path, "env_name_is_secret.json");
	assert_true(config_load(path, NULL, &cfg, err) < 0);
	assert_null(strstr(err, "PASTEDSECRET"));
}

static void test_bedrock_half_keys(void **state)
{
	char path[PATH_LEN];

	(void)state;
	setenv("PROMPTFS_TEST_AWS_ID", "AKIDEXAMPLE", 1);
	fixture(path, "bedrock_half_keys.json");
	expect_error(path, NULL,
		     "clouds.aws.auth: access_key_id and secret_access_key go together");
}

static void test_secret_file_mode_refused(void **state)
{
	char key[PATH_LEN], cfg_path[PATH_LEN], auth[PATH_LEN + 64];
	char message[CONFIG_ERROR_MAX];

	(void)state;
	tmp_file(key, "key.txt", "sk-file-SECRET-6\n", 0644);
	fmt(auth, sizeof(auth), "\"auth\": { \"api_key_file\": \"%s\" }", key);
	openai_config(cfg_path, "clouds.json", auth, NULL, 0600);
	fmt(message, sizeof(message),
	    "clouds.openai.auth.api_key_file: %s is readable by group or others (mode 0644); chmod "
	    "600 it",
	    key);
	expect_error(cfg_path, NULL, message);

	/* Group-readable alone is refused too. */
	tmp_file(key, "key.txt", "sk-file-SECRET-6\n", 0640);
	fmt(message, sizeof(message),
	    "clouds.openai.auth.api_key_file: %s is readable by group or others (mode 0640); chmod "
	    "600 it",
	    key);
	expect_error(cfg_path, NULL, message);
}

static void test_secret_file_accepted(void **state)
{
	char key[PATH_LEN], cfg_path[PATH_LEN];
	struct config *cfg;

	(void)state;
	/* Relative paths resolve beside the config file. */
	tmp_file(key, "key.txt", "sk-file-SECRET-6\n\n", 0600);
	openai_config(cfg_path, "clouds.json", "\"auth\": { \"api_key_file\": \"key.txt\" }", NULL,
		      0644);
	cfg = load_ok(cfg_path, NULL);
	/* One trailing newline is the editor's, the other the user's. */
	assert_string_equal(cfg->clouds[0].credentials.api_key, "sk-file-SECRET-6\n");
	assert_string_equal(cfg->clouds[0].auth_sources[0].key, "api_key_file");
	assert_string_equal(cfg->clouds[0].auth_sources[0].value, key);
	config_free(cfg);

	tmp_file(key, "key.txt", "\n", 0600);
	{
		char message[CONFIG_ERROR_MAX];

		fmt(message, sizeof(message), "clouds.openai.auth.api_key_file: %s is empty", key);
		expect_error(cfg_path, NULL, message);
	}
}

static void test_inline_secret_needs_private_config(void **state)
{
	char cfg_path[PATH_LEN], message[CONFIG_ERROR_MAX];
	char err[CONFIG_ERROR_MAX];
	struct config *cfg = NULL;

	(void)state;
	openai_config(cfg_path, "clouds.json", "\"auth\": { \"api_key\": \"sk-inline-SECRET-7\" }",
		      NULL, 0644);
	fmt(message, sizeof(message),
	    "clouds.openai.auth.api_key: inline secret refused: %s is mode 0644; it must be 0600 "
	    "or stricter",
	    cfg_path);
	expect_error(cfg_path, NULL, message);
	assert_true(config_load(cfg_path, NULL, &cfg, err) < 0);
	assert_null(strstr(err, "SECRET-7"));

	assert_int_equal(chmod(cfg_path, 0600), 0);
	cfg = load_ok(cfg_path, NULL);
	assert_string_equal(cfg->clouds[0].credentials.api_key, "sk-inline-SECRET-7");
	config_free(cfg);

	assert_int_equal(chmod(cfg_path, 0400), 0);
	cfg = load_ok(cfg_path, NULL);
	config_free(cfg);
}

static void test_env_secret(void **state)
{
	char cfg_path[PATH_LEN];
	struct config *cfg;

	(void)state;
	openai_config(cfg_path, "clouds.json",
		      "\"auth\": { \"api_key_env\": \"PROMPTFS_TEST_OPENAI_KEY\" }", NULL, 0644);
	setenv("PROMPTFS_TEST_OPENAI_KEY", "", 1);
	expect_error(cfg_path, NULL,
		     "clouds.openai.auth.api_key_env: environment variable "
		     "PROMPTFS_TEST_OPENAI_KEY is empty");
	setenv("PROMPTFS_TEST_OPENAI_KEY", "sk-env-SECRET-8", 1);
	cfg = load_ok(cfg_path, NULL);
	assert_string_equal(cfg->clouds[0].credentials.api_key, "sk-env-SECRET-8");
	config_free(cfg);
}

static char *print_to_string(const struct config *cfg);

/* What --print-config shows of CFG has WANT and no secret. */
static void expect_printed_auth(const struct config *cfg, const char *want)
{
	char *printed = print_to_string(cfg);

	if (!strstr(printed, want))
		print_error("printed:\n%s\nwithout: %s\n", printed, want);
	assert_non_null(strstr(printed, want));
	assert_null(strstr(printed, "SECRET"));
	free(printed);
}

/* OPENAI_API_KEY goes to OpenAI, not to a server of one's own. */
static void test_openai_default_key(void **state)
{
	char cfg_path[PATH_LEN];
	struct config *cfg;

	(void)state;
	setenv("OPENAI_API_KEY", "sk-default-SECRET-9", 1);
	openai_config(cfg_path, "a.json", "", NULL, 0644);
	cfg = load_ok(cfg_path, NULL);
	assert_string_equal(cfg->clouds[0].credentials.api_key, "sk-default-SECRET-9");
	/* --print-config says where the key comes from... */
	expect_printed_auth(cfg,
			    "\"auth\": {\n        \"api_key_env\": \"OPENAI_API_KEY\"\n      }");
	config_free(cfg);

	openai_config(cfg_path, "b.json", "", "http://127.0.0.1:8080/v1/", 0644);
	cfg = load_ok(cfg_path, NULL);
	assert_null(cfg->clouds[0].credentials.api_key);
	assert_string_equal(cfg->clouds[0].regions[0].endpoint, "http://127.0.0.1:8080/v1");
	/* ...or that none is sent */
	expect_printed_auth(cfg, "\"auth\": {}");
	config_free(cfg);

	unsetenv("OPENAI_API_KEY");
	openai_config(cfg_path, "c.json", "", NULL, 0644);
	cfg = load_ok(cfg_path, NULL);
	assert_null(cfg->clouds[0].credentials.api_key);
	expect_printed_auth(cfg, "\"auth\": {}");
	config_free(cfg);
}

static const char aws_ini[] = "# comments are fine\n"
			      "[default]\n"
			      "aws_access_key_id = AKIDDEFAULT\n"
			      "aws_secret_access_key = default-SECRET-10\n"
			      "\n"
			      "[profile prod]\n"
			      "aws_access_key_id=AKIDPROD\n"
			      "aws_secret_access_key=prod-SECRET-11\n"
			      "aws_session_token = prod-token-SECRET-12\n"
			      "region = eu-west-1\n";

static void bedrock_config(char out[PATH_LEN], const char *auth)
{
	char text[2048];

	fmt(text, sizeof(text),
	    "{ \"clouds\": { \"aws\": { \"provider\": \"bedrock\", %s%s"
	    "\"regions\": { \"us-east-1\": { \"geo\": \"us\", "
	    "\"models\": { \"nova\": { \"id\": \"amazon.nova-pro-v1:0\" } } } } } } }\n",
	    auth, *auth ? ", " : "");
	tmp_file(out, "clouds.json", text, 0644);
}

static void test_aws_profile_from_home(void **state)
{
	char ini[PATH_LEN], cfg_path[PATH_LEN], message[CONFIG_ERROR_MAX];
	const struct credentials *creds;
	struct config *cfg;

	(void)state;
	tmp_mkdir(".aws");
	tmp_file(ini, ".aws/credentials", aws_ini, 0600);
	bedrock_config(cfg_path, "");

	cfg = load_ok(cfg_path, NULL);
	creds = &cfg->clouds[0].credentials;
	assert_string_equal(creds->aws_access_key_id, "AKIDDEFAULT");
	assert_string_equal(creds->aws_secret_access_key, "default-SECRET-10");
	assert_null(creds->aws_session_token);
	assert_string_equal(cfg->clouds[0].auth_sources[0].key, "credentials_file");
	assert_string_equal(cfg->clouds[0].auth_sources[0].value, ini);
	assert_string_equal(cfg->clouds[0].auth_sources[1].value, "default");
	config_free(cfg);

	setenv("AWS_PROFILE", "prod", 1);
	cfg = load_ok(cfg_path, NULL);
	creds = &cfg->clouds[0].credentials;
	assert_string_equal(creds->aws_access_key_id, "AKIDPROD");
	assert_string_equal(creds->aws_secret_access_key, "prod-SECRET-11");
	assert_string_equal(creds->aws_session_token, "prod-token-SECRET-12");
	config_free(cfg);

	setenv("AWS_PROFILE", "staging", 1);
	fmt(message, sizeof(message),
	    "clouds.aws.auth: absent, AWS_ACCESS_KEY_ID is not set, and %s has no profile "
	    "[staging]",
	    ini);
	expect_error(cfg_path, NULL, message);

	/* The environment wins over the file. */
	setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "env-SECRET-13", 1);
	cfg = load_ok(cfg_path, NULL);
	assert_string_equal(cfg->clouds[0].credentials.aws_access_key_id, "AKIDENV");
	config_free(cfg);

	unsetenv("AWS_SECRET_ACCESS_KEY");
	expect_error(cfg_path, NULL,
		     "clouds.aws.auth: absent, and AWS_ACCESS_KEY_ID is set but "
		     "AWS_SECRET_ACCESS_KEY is not");
}

static void test_aws_credentials_file_checks(void **state)
{
	char ini[PATH_LEN], cfg_path[PATH_LEN], message[CONFIG_ERROR_MAX];
	char err[CONFIG_ERROR_MAX];
	struct config *cfg = NULL;

	(void)state;
	bedrock_config(cfg_path, "");
	fmt(message, sizeof(message),
	    "clouds.aws.auth: absent, AWS_ACCESS_KEY_ID is not set, and cannot open "
	    "%s/.aws/credentials: No such file or directory",
	    tmp_dir);
	expect_error(cfg_path, NULL, message);

	tmp_file(ini, "shared", aws_ini, 0644);
	setenv("AWS_SHARED_CREDENTIALS_FILE", ini, 1);
	fmt(message, sizeof(message),
	    "clouds.aws.auth: absent, AWS_ACCESS_KEY_ID is not set, and %s is readable by group or "
	    "others (mode 0644); chmod 600 it",
	    ini);
	expect_error(cfg_path, NULL, message);
	assert_true(config_load(cfg_path, NULL, &cfg, err) < 0);
	assert_null(strstr(err, "SECRET-"));

	tmp_file(ini, "shared", "[default]\naws_access_key_id = AKID\n", 0600);
	fmt(message, sizeof(message),
	    "clouds.aws.auth: absent, AWS_ACCESS_KEY_ID is not set, and %s: profile [default] "
	    "needs aws_access_key_id and aws_secret_access_key",
	    ini);
	expect_error(cfg_path, NULL, message);
}

static void test_bedrock_auth_keys(void **state)
{
	char ini[PATH_LEN], cfg_path[PATH_LEN];
	struct config *cfg;

	(void)state;
	tmp_file(ini, "team-credentials", aws_ini, 0600);
	bedrock_config(
		cfg_path,
		"\"auth\": { \"credentials_file\": \"team-credentials\", \"profile\": \"prod\" }");
	cfg = load_ok(cfg_path, NULL);
	assert_string_equal(cfg->clouds[0].credentials.aws_access_key_id, "AKIDPROD");
	config_free(cfg);

	bedrock_config(cfg_path, "\"auth\": { \"access_key_id_env\": \"PROMPTFS_TEST_AWS_ID\", "
				 "\"profile\": \"prod\" }");
	setenv("PROMPTFS_TEST_AWS_ID", "AKID", 1);
	expect_error(
		cfg_path, NULL,
		"clouds.aws.auth: give either access keys or credentials_file/profile, not both");

	bedrock_config(cfg_path, "\"auth\": { \"api_key_env\": \"X\" }");
	expect_error(cfg_path, NULL,
		     "clouds.aws.auth.api_key_env: not an auth key for provider bedrock");
}

static const char service_account_json[] =
	"{ \"type\": \"service_account\", \"project_id\": \"acme-sa\", "
	"\"private_key_id\": \"kid-1\", "
	"\"private_key\": \"-----BEGIN PRIVATE KEY-----\\nPEM-SECRET-14\\n-----END PRIVATE "
	"KEY-----\\n\", "
	"\"client_email\": \"promptfs@acme-sa.iam.gserviceaccount.com\" }\n";

static void vertex_config(char out[PATH_LEN], const char *auth)
{
	char text[2048];

	fmt(text, sizeof(text),
	    "{ \"clouds\": { \"gcp\": { \"provider\": \"vertex\", \"project\": \"acme\", %s%s"
	    "\"regions\": { \"europe-west4\": { \"geo\": \"eu\", "
	    "\"models\": { \"gemini-2.5-flash\": {} } } } } } }\n",
	    auth, *auth ? ", " : "");
	tmp_file(out, "clouds.json", text, 0644);
}

static void test_vertex_service_account(void **state)
{
	char key[PATH_LEN], cfg_path[PATH_LEN], message[CONFIG_ERROR_MAX];
	const struct google_service_account *sa;
	struct config *cfg;

	(void)state;
	tmp_file(key, "sa.json", service_account_json, 0600);
	vertex_config(cfg_path, "\"auth\": { \"service_account_file\": \"sa.json\" }");
	cfg = load_ok(cfg_path, NULL);
	sa = cfg->clouds[0].credentials.service_account;
	assert_non_null(sa);
	assert_string_equal(sa->client_email, "promptfs@acme-sa.iam.gserviceaccount.com");
	assert_string_equal(sa->private_key_id, "kid-1");
	assert_non_null(strstr(sa->private_key_pem, "PEM-SECRET-14"));
	assert_string_equal(sa->token_uri, "https://oauth2.googleapis.com/token");
	assert_true(cfg->clouds[0].regions[0].models[0].price.output_per_mtok == 2.50);
	config_free(cfg);

	/* Absent auth: $GOOGLE_APPLICATION_CREDENTIALS. */
	vertex_config(cfg_path, "");
	expect_error(cfg_path, NULL,
		     "clouds.gcp.auth: absent, and environment variable "
		     "GOOGLE_APPLICATION_CREDENTIALS is not set");
	setenv("GOOGLE_APPLICATION_CREDENTIALS", key, 1);
	cfg = load_ok(cfg_path, NULL);
	assert_non_null(cfg->clouds[0].credentials.service_account);
	config_free(cfg);

	tmp_file(key, "sa.json", service_account_json, 0604);
	fmt(message, sizeof(message),
	    "clouds.gcp.auth: GOOGLE_APPLICATION_CREDENTIALS: %s is readable by group or others "
	    "(mode 0604); chmod 600 it",
	    key);
	expect_error(cfg_path, NULL, message);

	tmp_file(key, "sa.json", "{ \"type\": \"authorized_user\" }", 0600);
	vertex_config(cfg_path, "\"auth\": { \"service_account_file\": \"sa.json\" }");
	fmt(message, sizeof(message),
	    "clouds.gcp.auth.service_account_file: %s: not a service account key (\"type\" is not "
	    "\"service_account\")",
	    key);
	expect_error(cfg_path, NULL, message);

	/* A broken key file: its position only, never its text. */
	tmp_file(key, "sa.json", "{ \"private_key\": PEM-SECRET-14 }", 0600);
	fmt(message, sizeof(message),
	    "clouds.gcp.auth.service_account_file: %s: not valid JSON (line 1 column 20)", key);
	expect_error(cfg_path, NULL, message);
}

static void test_catalog_fill_in(void **state)
{
	char cfg_path[PATH_LEN];
	const struct model *m;
	struct config *cfg;

	(void)state;
	tmp_file(cfg_path, "clouds.json",
		 "{ \"clouds\": { \"openai\": { \"provider\": \"openai\", \"regions\": { \"us\": { "
		 "\"geo\": \"us\", \"models\": {"
		 " \"gpt-4o-mini\": {}, \"mine\": { \"id\": \"gpt-4o-mini\" },"
		 " \"house\": {}, \"priced\": { \"id\": \"gpt-4o\", \"family\": \"big\", "
		 "\"price\": { \"input_per_mtok\": 0, \"output_per_mtok\": 0 } }"
		 " } } } } } }",
		 0644);
	cfg = load_ok(cfg_path, NULL);
	m = config_find_model(cfg, "openai", "us", "gpt-4o-mini");
	assert_true(m->price.known && m->price.input_per_mtok == 0.15 &&
		    m->price.output_per_mtok == 0.60);
	m = config_find_model(cfg, "openai", "us", "mine");
	assert_string_equal(m->family, "gpt-4o-mini");
	assert_true(m->price.input_per_mtok == 0.15);
	m = config_find_model(cfg, "openai", "us", "house");
	assert_false(m->price.known);
	assert_string_equal(m->family, "house");
	m = config_find_model(cfg, "openai", "us", "priced");
	assert_true(m->price.known && m->price.input_per_mtok == 0);
	assert_string_equal(m->family, "big");
	config_free(cfg);
}

static void test_catalog_file_replaces(void **state)
{
	char cfg_path[PATH_LEN], catalog[PATH_LEN];
	const struct model *m;
	struct config *cfg;

	(void)state;
	fixture(catalog, "catalog_custom.json");
	tmp_file(cfg_path, "clouds.json",
		 "{ \"clouds\": { \"openai\": { \"provider\": \"openai\", \"regions\": { \"us\": { "
		 "\"geo\": \"us\", \"models\": {"
		 " \"gpt-4o\": {}, \"gpt-4o-mini\": {}, \"house-model\": {} } } } } } }",
		 0644);
	cfg = load_ok(cfg_path, catalog);
	m = config_find_model(cfg, "openai", "us", "gpt-4o");
	assert_string_equal(m->family, "omni");
	assert_true(m->price.input_per_mtok == 1.0 && m->price.output_per_mtok == 4.0);
	/* Replaced, not merged: the built-in entry is gone. */
	m = config_find_model(cfg, "openai", "us", "gpt-4o-mini");
	assert_false(m->price.known);
	m = config_find_model(cfg, "openai", "us", "house-model");
	assert_true(m->price.known && m->price.output_per_mtok == 0);
	assert_string_equal(m->family, "house-model");
	config_free(cfg);
}

static void test_catalog_file_errors(void **state)
{
	static const struct bad_case cases[] = {
		{ "catalog_bad_price.json", "[1].input_per_mtok: must be a number >= 0" },
		{ "catalog_unknown_key.json", "[0].currency: unknown key" },
		{ "catalog_duplicate.json", "[1]: duplicate of [0] (same provider and id)" },
		{ "catalog_bad_provider.json",
		  "[0].provider: must be one of openai, azure, bedrock, vertex, anthropic" },
		{ "catalog_not_list.json", "top level: must be a list of models" },
	};
	char cfg_path[PATH_LEN], catalog[PATH_LEN];
	char err[CONFIG_ERROR_MAX], expected[CONFIG_ERROR_MAX];
	struct config *cfg = NULL;
	size_t i;

	(void)state;
	fixture(cfg_path, "minimal.json");
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fixture(catalog, cases[i].file);
		assert_true(config_load(cfg_path, catalog, &cfg, err) < 0);
		fmt(expected, sizeof(expected), "%s: %s", catalog, cases[i].message);
		assert_string_equal(err, expected);
	}
	fmt(catalog, sizeof(catalog), "%s/none.json", tmp_dir);
	assert_int_equal(config_load(cfg_path, catalog, &cfg, err), -ENOENT);
	fmt(expected, sizeof(expected), "%s: cannot open: No such file or directory", catalog);
	assert_string_equal(err, expected);
}

static void test_builtin_catalog(void **state)
{
	char err[CONFIG_ERROR_MAX];
	const struct catalog_entry *e;
	struct catalog *cat = NULL;

	(void)state;
	assert_int_equal(catalog_load(NULL, &cat, err), 0);
	e = catalog_find(cat, PROVIDER_OPENAI, "gpt-4o");
	assert_true(e && e->input_per_mtok == 2.50 && e->output_per_mtok == 10.00 &&
		    e->context_window == 128000);
	e = catalog_find(cat, PROVIDER_VERTEX, "gemini-2.5-flash");
	assert_true(e && e->input_per_mtok == 0.30 && e->output_per_mtok == 2.50);
	e = catalog_find(cat, PROVIDER_BEDROCK, "eu.anthropic.claude-3-7-sonnet-20250219-v1:0");
	assert_true(e && strcmp(e->family, "claude-sonnet") == 0);
	/* A profile not listed falls back to the model it routes to. */
	e = catalog_find(cat, PROVIDER_BEDROCK, "apac.anthropic.claude-3-7-sonnet-20250219-v1:0");
	assert_true(e && e->input_per_mtok == 3.0);
	assert_null(catalog_find(cat, PROVIDER_ANTHROPIC, "gpt-4o"));
	catalog_free(cat);
}

/* Runs config_print() into a string (caller frees). */
static char *print_to_string(const struct config *cfg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);

	assert_non_null(out);
	assert_int_equal(config_print(cfg, out), 0);
	fclose(out);
	return text;
}

static void test_print_never_shows_secrets(void **state)
{
	static const char *const secrets[] = { "azure-SECRET-1",
					       "aws-SECRET-2",
					       "ya29.gcp-SECRET-3",
					       "sk-openai-SECRET-4",
					       "sk-ant-SECRET-5",
					       "sk-file-SECRET-6",
					       "sk-inline-SECRET-7",
					       "PEM-SECRET-14",
					       "SECRET-",
					       NULL };
	char cfg_path[PATH_LEN], key[PATH_LEN], sa[PATH_LEN];
	char text[4096], reload[PATH_LEN], err[CONFIG_ERROR_MAX];
	struct config *cfg, *again = NULL;
	char *printed;
	size_t i;

	(void)state;
	set_valid_env();
	tmp_file(key, "key.txt", "sk-file-SECRET-6\n", 0600);
	tmp_file(sa, "sa.json", service_account_json, 0600);
	fmt(text, sizeof(text),
	    "{ \"clouds\": {"
	    " \"inline\": { \"provider\": \"openai\", \"auth\": { \"api_key\": "
	    "\"sk-inline-SECRET-7\" },"
	    "  \"regions\": { \"us\": { \"geo\": \"us\", \"models\": { \"gpt-4o\": {} } } } },"
	    " \"file\": { \"provider\": \"anthropic\", \"auth\": { \"api_key_file\": \"%s\" },"
	    "  \"regions\": { \"us\": { \"geo\": \"us\", \"models\": { "
	    "\"claude-3-5-haiku-latest\": {} } } } },"
	    " \"env\": { \"provider\": \"azure\", \"auth\": { \"bearer_token_env\": "
	    "\"PROMPTFS_TEST_AZURE_KEY\" },"
	    "  \"regions\": { \"swedencentral\": { \"geo\": [\"eu\"], \"endpoint\": "
	    "\"https://x.openai.azure.com\", \"models\": { \"gpt-4o\": {} } } } },"
	    " \"aws\": { \"provider\": \"bedrock\", \"auth\": { \"access_key_id_env\": "
	    "\"PROMPTFS_TEST_AWS_ID\", \"secret_access_key_env\": \"PROMPTFS_TEST_AWS_SECRET\" },"
	    "  \"regions\": { \"us-east-1\": { \"geo\": \"us\", \"models\": { "
	    "\"amazon.nova-pro-v1:0\": {} } } } },"
	    " \"gcp\": { \"provider\": \"vertex\", \"project\": \"acme\", \"auth\": { "
	    "\"service_account_file\": \"%s\" },"
	    "  \"regions\": { \"global\": { \"geo\": \"global\", \"models\": { \"gemini-2.5-pro\": "
	    "{} } } } }"
	    " } }\n",
	    key, sa);
	tmp_file(cfg_path, "clouds.json", text, 0600);
	cfg = load_ok(cfg_path, NULL);
	printed = print_to_string(cfg);
	for (i = 0; secrets[i]; i++) {
		if (strstr(printed, secrets[i]))
			print_error("printed a secret: %s\n", secrets[i]);
		assert_null(strstr(printed, secrets[i]));
	}
	assert_non_null(strstr(printed, "\"bearer_token_env\": \"PROMPTFS_TEST_AZURE_KEY\""));
	assert_non_null(strstr(printed, "\"api_key\": \"(inline, hidden)\""));
	assert_non_null(strstr(printed, key));
	assert_non_null(strstr(printed, "\"api_version\": \"2024-10-21\""));
	config_free(cfg);
	free(printed);

	/* What --print-config shows of the valid fixture loads again, to
	 * the same document. */
	fixture(cfg_path, "valid.json");
	cfg = load_ok(cfg_path, NULL);
	printed = print_to_string(cfg);
	tmp_file(reload, "printed.json", printed, 0600);
	assert_int_equal(config_load(reload, NULL, &again, err), 0);
	{
		char *printed_again = print_to_string(again);

		assert_string_equal(printed, printed_again);
		free(printed_again);
	}
	config_free(again);
	config_free(cfg);
	free(printed);
}

/* A listening socket on a free loopback port; its number goes in PORT. */
static int listen_loopback(int *port)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(fd, 4), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
	*port = ntohs(addr.sin_port);
	return fd;
}

static void test_environment_default(void **state)
{
	char err[CONFIG_ERROR_MAX], host[64];
	const struct cloud *c;
	struct config *cfg = NULL;
	char *printed;
	size_t i;
	int fd, port;

	(void)state;
	assert_int_equal(config_from_environment(NULL, &cfg, err), -ENOENT);
	assert_non_null(strstr(err, "environment: no cloud configured"));

	setenv("OPENAI_API_KEY", "sk-env-default-SECRET-15", 1);
	setenv("ANTHROPIC_API_KEY", "sk-ant-default-SECRET-16", 1);
	setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "aws-default-SECRET-17", 1);
	setenv("AWS_REGION", "eu-central-1", 1);
	fd = listen_loopback(&port);
	fmt(host, sizeof(host), "127.0.0.1:%d", port);
	setenv("OLLAMA_HOST", host, 1);

	assert_int_equal(config_from_environment(NULL, &cfg, err), 0);
	assert_null(cfg->path);
	assert_int_equal(cfg->n_clouds, 4);

	c = find_cloud(cfg, "openai");
	assert_string_equal(c->credentials.api_key, "sk-env-default-SECRET-15");
	assert_string_equal(c->regions[0].geo[0], "us");
	assert_non_null(config_find_model(cfg, "openai", "us", "gpt-4o"));

	c = find_cloud(cfg, "anthropic");
	assert_string_equal(c->credentials.api_key, "sk-ant-default-SECRET-16");

	c = find_cloud(cfg, "aws");
	assert_string_equal(c->regions[0].name, "eu-central-1");
	assert_int_equal(c->regions[0].n_geo, 2);
	assert_string_equal(c->regions[0].geo[0], "eu");
	assert_string_equal(c->regions[0].geo[1], "de");
	assert_non_null(config_find_model(cfg, "aws", "eu-central-1",
					  "eu.anthropic.claude-3-7-sonnet-20250219-v1:0"));
	/* A US cross-region profile does not run from Frankfurt. */
	assert_null(config_find_model(cfg, "aws", "eu-central-1",
				      "us.anthropic.claude-3-7-sonnet-20250219-v1:0"));
	for (i = 0; i < c->regions[0].n_models; i++)
		assert_true(c->regions[0].models[i].price.known);

	c = find_cloud(cfg, "local");
	assert_non_null(c);
	assert_null(c->credentials.api_key);
	assert_string_equal(c->regions[0].geo[0], "local");
	fmt(host, sizeof(host), "http://127.0.0.1:%d/v1", port);
	assert_string_equal(c->regions[0].endpoint, host);

	printed = print_to_string(cfg);
	assert_null(strstr(printed, "SECRET-"));
	assert_non_null(strstr(printed, "\"api_key_env\": \"OPENAI_API_KEY\""));
	free(printed);
	config_free(cfg);

	/* No server, no local cloud. */
	close(fd);
	assert_int_equal(config_from_environment(NULL, &cfg, err), 0);
	assert_null(find_cloud(cfg, "local"));
	config_free(cfg);
}

static void test_environment_azure_vertex(void **state)
{
	char err[CONFIG_ERROR_MAX], key[PATH_LEN];
	const struct cloud *c;
	struct config *cfg = NULL;

	(void)state;
	setenv("AZURE_OPENAI_ENDPOINT", "https://contoso.openai.azure.com/", 1);
	setenv("AZURE_OPENAI_API_KEY", "azure-default-SECRET-18", 1);
	setenv("AZURE_OPENAI_REGION", "germanywestcentral", 1);
	tmp_file(key, "sa.json", service_account_json, 0600);
	setenv("GOOGLE_APPLICATION_CREDENTIALS", key, 1);
	setenv("GOOGLE_CLOUD_LOCATION", "europe-west4", 1);

	assert_int_equal(config_from_environment(NULL, &cfg, err), 0);
	c = find_cloud(cfg, "azure");
	assert_non_null(c);
	assert_string_equal(c->regions[0].endpoint, "https://contoso.openai.azure.com");
	assert_string_equal(c->regions[0].geo[0], "eu");
	assert_string_equal(c->regions[0].geo[1], "de");
	assert_non_null(config_find_model(cfg, "azure", "germanywestcentral", "gpt-4o"));
	c = find_cloud(cfg, "gcp");
	assert_non_null(c);
	/* No GOOGLE_CLOUD_PROJECT: the key's own project. */
	assert_string_equal(c->project, "acme-sa");
	assert_string_equal(c->regions[0].name, "europe-west4");
	assert_string_equal(c->regions[0].geo[0], "eu");
	assert_non_null(c->credentials.service_account);
	config_free(cfg);

	tmp_file(key, "sa.json", service_account_json, 0644);
	assert_true(config_from_environment(NULL, &cfg, err) < 0);
	assert_non_null(strstr(err, "environment: "));
	assert_non_null(strstr(err, "chmod 600 it"));
	assert_null(strstr(err, "SECRET-"));
}

/* ---- config_check (promptfs --check) ---- */

/* Whether a bad_cases sentence is about a secret that is not here,
 * which --check takes for no error. */
static int about_absent_secret(const char *message)
{
	return strstr(message, "is not set") != NULL;
}

/* Each fixture config_load refuses, config_check refuses with the same
 * sentence first, unless all that is wrong is a secret not being here. */
static void test_check_agrees_with_load(void **state)
{
	struct config_report report;
	char path[PATH_LEN], expected[CONFIG_ERROR_MAX];
	size_t i;
	int rc;

	(void)state;
	for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		fixture(path, bad_cases[i].file);
		rc = config_check(path, NULL, &report);
		if (about_absent_secret(bad_cases[i].message)) {
			assert_int_equal(rc, 0);
			assert_int_equal(report.n_errors, 0);
			assert_true(report.secrets_absent >= 1);
		} else {
			fmt(expected, sizeof(expected), "%s: %s", path, bad_cases[i].message);
			assert_int_equal(rc, -EINVAL);
			assert_true(report.n_errors >= 1);
			assert_string_equal(report.errors[0], expected);
		}
		assert_int_equal(report.n_lost, 0);
		config_report_release(&report);
	}
}

/* Every error of the file, in file order, each once: reading goes on
 * after an error in a key, a tag, a field, a model, a region or a cloud. */
static void test_check_reports_every_error(void **state)
{
	static const char *const expected[] = {
		"clouds.openai.regionz: unknown key",
		"clouds.openai.regions.us.geo[1]: must be a non-empty string",
		"clouds.openai.regions.us.endpoint: must start with http:// or https://",
		"clouds.openai.regions.us.models.gpt-4o.temperature: unknown key",
		"clouds.openai.regions.us.models.gpt-4o.max_output_tokens: must be an integer >= 1",
		"clouds.bad.provider: must be one of openai, azure, bedrock, vertex, anthropic",
		"clouds.any: the name \"any\" is reserved for the routed view",
		"clouds.any.regions.us.models.claude.price.input_per_mtok: must be a number >= 0",
		"clouds.gcp.project: required for provider vertex",
		"clouds.gcp.regions.europe-west4.geo: required",
		"clouds.gcp.auth: give either service_account_file or an access token, not both",
	};
	struct config_report report;
	char path[PATH_LEN], line[CONFIG_ERROR_MAX], err[CONFIG_ERROR_MAX];
	struct config *cfg = NULL;
	size_t i;

	(void)state;
	fixture(path, "check_many_errors.json");
	assert_int_equal(config_check(path, NULL, &report), -EINVAL);
	for (i = 0; i < report.n_errors && i < sizeof(expected) / sizeof(expected[0]); i++) {
		fmt(line, sizeof(line), "%s: %s", path, expected[i]);
		assert_string_equal(report.errors[i], line);
	}
	assert_int_equal(report.n_errors, sizeof(expected) / sizeof(expected[0]));
	config_report_release(&report);
	assert_null(report.errors);

	/* The mount itself still stops at the first. */
	assert_true(config_load(path, NULL, &cfg, err) < 0);
	fmt(line, sizeof(line), "%s: %s", path, expected[0]);
	assert_string_equal(err, line);
	assert_null(cfg);
}

/* Unset variables and absent key files are no error for --check. */
static void test_check_without_secrets(void **state)
{
	struct config_report report;
	char path[PATH_LEN];

	(void)state;
	fixture(path, "valid.json"); /* every PROMPTFS_TEST_* variable unset */
	assert_int_equal(config_check(path, NULL, &report), 0);
	assert_int_equal(report.n_errors, 0);
	assert_int_equal(report.n_clouds, 6);
	assert_int_equal(report.n_regions, 7);
	assert_int_equal(report.n_models, 10);
	assert_int_equal(report.secrets_absent, 6);
	config_report_release(&report);

	openai_config(path, "clouds.json", "\"auth\": { \"api_key_file\": \"absent.key\" }", NULL,
		      0644);
	assert_int_equal(config_check(path, NULL, &report), 0);
	assert_int_equal(report.secrets_absent, 1);
	config_report_release(&report);

	/* Provider defaults: no variable, no ~/.aws/credentials, no key. */
	bedrock_config(path, "");
	assert_int_equal(config_check(path, NULL, &report), 0);
	assert_int_equal(report.secrets_absent, 1);
	config_report_release(&report);
	vertex_config(path, "");
	assert_int_equal(config_check(path, NULL, &report), 0);
	config_report_release(&report);
	vertex_config(path, "\"auth\": { \"service_account_file\": \"absent-sa.json\" }");
	assert_int_equal(config_check(path, NULL, &report), 0);
	config_report_release(&report);
}

/* A secret that is here is checked as at the mount, mode included. */
static void test_check_present_secrets(void **state)
{
	struct config_report report;
	char key[PATH_LEN], path[PATH_LEN], expected[CONFIG_ERROR_MAX];

	(void)state;
	tmp_file(key, "key.txt", "sk-file-SECRET-6\n", 0644);
	openai_config(path, "clouds.json", "\"auth\": { \"api_key_file\": \"key.txt\" }", NULL,
		      0600);
	assert_int_equal(config_check(path, NULL, &report), -EINVAL);
	assert_int_equal(report.n_errors, 1);
	fmt(expected, sizeof(expected),
	    "%s: clouds.openai.auth.api_key_file: %s/key.txt is readable by group or others "
	    "(mode 0644); chmod 600 it",
	    path, tmp_dir);
	assert_string_equal(report.errors[0], expected);
	config_report_release(&report);

	/* Inline secrets only in a private config file. */
	openai_config(path, "clouds.json", "\"auth\": { \"api_key\": \"sk-inline-SECRET-7\" }",
		      NULL, 0644);
	assert_int_equal(config_check(path, NULL, &report), -EINVAL);
	assert_int_equal(report.n_errors, 1);
	assert_non_null(strstr(report.errors[0], "inline secret refused"));
	assert_null(strstr(report.errors[0], "SECRET-7"));
	config_report_release(&report);

	/* A key file that is here but not a service account key. */
	tmp_file(key, "sa.json", "{ \"type\": \"authorized_user\" }", 0600);
	vertex_config(path, "\"auth\": { \"service_account_file\": \"sa.json\" }");
	assert_int_equal(config_check(path, NULL, &report), -EINVAL);
	assert_int_equal(report.n_errors, 1);
	assert_non_null(strstr(report.errors[0], "not a service account key"));
	config_report_release(&report);

	/* A variable that is set but empty is as good as unset. */
	setenv("PROMPTFS_TEST_EMPTY", "", 1);
	openai_config(path, "clouds.json", "\"auth\": { \"api_key_env\": \"PROMPTFS_TEST_EMPTY\" }",
		      NULL, 0644);
	assert_int_equal(config_check(path, NULL, &report), 0);
	config_report_release(&report);
	unsetenv("PROMPTFS_TEST_EMPTY");
}

/* What --check prints. */
static void test_check_command_output(void **state)
{
	char path[PATH_LEN], out_text[4096] = "", err_text[8192] = "", expected[8192];
	FILE *out, *err;
	size_t n;

	(void)state;
	fixture(path, "valid.json");
	out = tmpfile();
	err = tmpfile();
	assert_non_null(out);
	assert_non_null(err);
	assert_int_equal(config_check_command(path, NULL, out, err), 0);
	rewind(out);
	n = fread(out_text, 1, sizeof(out_text) - 1, out);
	out_text[n] = '\0';
	fmt(expected, sizeof(expected),
	    "%s: OK: 6 clouds, 7 regions, 10 models; 6 secrets not present here, not checked\n",
	    path);
	assert_string_equal(out_text, expected);
	assert_int_equal(ftell(err), 0);
	fclose(out);
	fclose(err);

	fixture(path, "check_many_errors.json");
	out = tmpfile();
	err = tmpfile();
	assert_non_null(out);
	assert_non_null(err);
	assert_int_equal(config_check_command(path, NULL, out, err), 1);
	assert_int_equal(ftell(out), 0);
	rewind(err);
	n = fread(err_text, 1, sizeof(err_text) - 1, err);
	err_text[n] = '\0';
	fmt(expected, sizeof(expected), "promptfs: %s: clouds.openai.regionz: unknown key\n", path);
	assert_memory_equal(err_text, expected, strlen(expected));
	fmt(expected, sizeof(expected), "\npromptfs: %s: 11 errors\n", path);
	assert_string_equal(err_text + strlen(err_text) - strlen(expected), expected);
	fclose(out);
	fclose(err);

	/* An unreadable or broken file is one error. */
	fmt(path, sizeof(path), "%s/absent.json", tmp_dir);
	err = tmpfile();
	assert_non_null(err);
	assert_int_equal(config_check_command(path, NULL, stdout, err), 1);
	rewind(err);
	n = fread(err_text, 1, sizeof(err_text) - 1, err);
	err_text[n] = '\0';
	fmt(expected, sizeof(expected),
	    "promptfs: %s: cannot open: No such file or directory\npromptfs: %s: 1 error\n", path,
	    path);
	assert_string_equal(err_text, expected);
	fclose(err);
}

#ifdef TEST_WRAP_ALLOC
/* Allocation failure: linked with -Wl,--wrap=malloc,--wrap=calloc,
 * --wrap=realloc,--wrap=strdup, the loader's own allocations come here.
 * The Nth one fails; the loader must report it, leak nothing
 * (LeakSanitizer checks) and crash nowhere, for every N until loading
 * succeeds. jansson's own allocations are left alone: its 2.14 parser
 * asserts when one fails in the middle of a string. */
void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *ptr, size_t size);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *ptr, size_t size);
char *__wrap_strdup(const char *s);

static long allocs_before_failure = -1; /* -1: never fail */

static int allocation_fails(void)
{
	if (allocs_before_failure < 0)
		return 0;
	if (allocs_before_failure == 0) {
		allocs_before_failure = -1;
		return 1;
	}
	allocs_before_failure--;
	return 0;
}

void *__wrap_malloc(size_t size)
{
	return allocation_fails() ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t n, size_t size)
{
	return allocation_fails() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *ptr, size_t size)
{
	return allocation_fails() ? NULL : __real_realloc(ptr, size);
}

char *__wrap_strdup(const char *s)
{
	return allocation_fails() ? NULL : __real_strdup(s);
}

/* Runs LOAD with the Nth allocation failing, for N = 0, 1, ... until it
 * succeeds; returns how many failures it survived. */
static long survive_failures(int (*load)(struct config **out, char *err))
{
	char err[CONFIG_ERROR_MAX];
	struct config *cfg;
	long n;
	int rc;

	for (n = 0;; n++) {
		cfg = NULL;
		err[0] = '\0';
		allocs_before_failure = n;
		rc = load(&cfg, err);
		allocs_before_failure = -1;
		if (rc == 0) {
			config_free(cfg);
			break;
		}
		assert_true(rc < 0);
		assert_null(cfg);
		assert_true(err[0] != '\0');
	}
	return n;
}

static int load_valid(struct config **out, char *err)
{
	char path[PATH_LEN];

	fixture(path, "valid.json");
	return config_load(path, NULL, out, err);
}

static int load_from_environment(struct config **out, char *err)
{
	return config_from_environment(NULL, out, err);
}

/* config_check with the Nth allocation failing: -ENOMEM, or -EINVAL
 * with the errors it could record (n_lost counting the others); never a
 * crash or a leak. Returns how many failures it survived. */
static long check_survives_failures(const char *path, size_t n_expected)
{
	struct config_report report;
	long n;
	int rc;

	for (n = 0;; n++) {
		allocs_before_failure = n;
		rc = config_check(path, NULL, &report);
		allocs_before_failure = -1;
		assert_true(rc == -ENOMEM || rc == -EINVAL);
		if (rc == -EINVAL)
			assert_true(report.n_errors + report.n_lost >= 1);
		if (rc == -EINVAL && report.n_errors == n_expected && report.n_lost == 0) {
			config_report_release(&report);
			break;
		}
		config_report_release(&report);
	}
	return n;
}

static void test_allocation_failure(void **state)
{
	char ini[PATH_LEN];

	(void)state;
	set_valid_env();
	assert_true(survive_failures(load_valid) > 100);

	setenv("OPENAI_API_KEY", "sk-env-default-SECRET-15", 1);
	setenv("AWS_REGION", "us-east-1", 1);
	tmp_mkdir(".aws");
	tmp_file(ini, ".aws/credentials", aws_ini, 0600);
	assert_true(survive_failures(load_from_environment) > 100);

	fixture(ini, "check_many_errors.json");
	assert_true(check_survives_failures(ini, 11) > 50);
}
#endif

static void test_provider_names(void **state)
{
	enum provider p;

	(void)state;
	assert_string_equal(provider_name(PROVIDER_OPENAI), "openai");
	assert_string_equal(provider_name(PROVIDER_AZURE), "azure");
	assert_string_equal(provider_name(PROVIDER_BEDROCK), "bedrock");
	assert_string_equal(provider_name(PROVIDER_VERTEX), "vertex");
	assert_string_equal(provider_name(PROVIDER_ANTHROPIC), "anthropic");
	assert_int_equal(provider_parse("vertex", &p), 0);
	assert_int_equal(p, PROVIDER_VERTEX);
	assert_int_equal(provider_parse("gemini", &p), -EINVAL);
	config_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
		T(test_valid_full),
		T(test_invalid_fixtures),
		T(test_name_too_long),
		T(test_missing_file),
		T(test_env_name_never_echoed),
		T(test_bedrock_half_keys),
		T(test_secret_file_mode_refused),
		T(test_secret_file_accepted),
		T(test_inline_secret_needs_private_config),
		T(test_env_secret),
		T(test_openai_default_key),
		T(test_aws_profile_from_home),
		T(test_aws_credentials_file_checks),
		T(test_bedrock_auth_keys),
		T(test_vertex_service_account),
		T(test_catalog_fill_in),
		T(test_catalog_file_replaces),
		T(test_catalog_file_errors),
		T(test_builtin_catalog),
		T(test_print_never_shows_secrets),
		T(test_environment_default),
		T(test_environment_azure_vertex),
		T(test_provider_names),
		T(test_check_agrees_with_load),
		T(test_check_reports_every_error),
		T(test_check_without_secrets),
		T(test_check_present_secrets),
		T(test_check_command_output),
#ifdef TEST_WRAP_ALLOC
		T(test_allocation_failure),
#endif
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
