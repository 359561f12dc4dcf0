/* Directory policies (see policy.h). Both views of a policy, `.policy`
 * JSON and xattr text, go through one struct policy_value per key: the
 * JSON reader and the text reader fill one, value_check applies the
 * SPEC's rules to it, value_store moves it into the policy. */
#include "fs/policy.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "backends/utf8.h"
#include "mountopts/config.h"

/* Bytes reckoned for one message's role and framing (SPEC §6.4). */
#define COST_BYTES_PER_MESSAGE 8
/* Longest attempt a timeout may allow: a day. */
#define MAX_TIMEOUT_S 86400.0
#define MAX_UMASK 0777u
#define MAX_RETRIES 10
/* How much of an unknown key an error message repeats. */
#define KEY_ECHO_BYTES 64
/* Room for any double or long as text. */
#define NUMBER_TEXT_MAX 40

enum value_kind {
	KIND_LIST,
	KIND_NUMBER,
	KIND_INTEGER,
	KIND_WORD,
	KIND_STRING,
	KIND_OCTAL,
};

static const char *const boolean_words[] = { "false", "true", NULL };
static const char *const period_words[] = { "day", "month", "total", NULL };
static const char *const order_words[] = { "config", "price", "latency", NULL };
static const char *const format_words[] = { "auto", "text", "json", NULL };

/* What each key holds and the rule its values follow. A WORD key's value
 * is the index of its word, which is also its enum value (false 0, true
 * 1). Numbers lie in [MIN, MAX], or (MIN, MAX] when MIN_EXCLUSIVE. */
struct key_info {
	const char *name;
	enum value_kind kind;
	const char *rule; /* the end of "KEY must be ..." */
	double min;
	double max;
	int min_exclusive;
	const char *const *words;
};

static const struct key_info keys[POLICY_N_KEYS] = {
	[POLICY_PROVIDERS] = { "providers", KIND_LIST,
			       "be a list of cloud names, each non-empty, without commas, "
			       "control characters or surrounding blanks" },
	[POLICY_RESIDENCY] = { "residency", KIND_LIST,
			       "be a list of geo tags, each non-empty, without commas, "
			       "control characters or surrounding blanks" },
	[POLICY_MAX_REQUEST_USD] = { "max_request_usd", KIND_NUMBER, "be a number >= 0", 0,
				     HUGE_VAL },
	[POLICY_MAX_OUTPUT_TOKENS] = { "max_output_tokens", KIND_INTEGER, "be an integer >= 1", 1,
				       (double)LONG_MAX },
	[POLICY_MAX_PROMPT_BYTES] = { "max_prompt_bytes", KIND_INTEGER, "be an integer >= 1", 1,
				      (double)LONG_MAX },
	[POLICY_BUDGET_USD] = { "budget_usd", KIND_NUMBER, "be a number >= 0", 0, HUGE_VAL },
	[POLICY_BUDGET_PERIOD] = { "budget_period", KIND_WORD, "be one of day, month, total", 0, 0,
				   0, period_words },
	[POLICY_FALLBACK] = { "fallback", KIND_WORD, "be true or false", 0, 0, 0, boolean_words },
	[POLICY_ORDER] = { "order", KIND_WORD, "be one of config, price, latency", 0, 0, 0,
			   order_words },
	[POLICY_RETRIES] = { "retries", KIND_INTEGER, "be an integer from 0 to 10", 0,
			     MAX_RETRIES },
	[POLICY_TIMEOUT_S] = { "timeout_s", KIND_NUMBER, "be a number of seconds > 0 and <= 86400",
			       0, MAX_TIMEOUT_S, 1 },
	[POLICY_FIRST_TOKEN_TIMEOUT_S] = { "first_token_timeout_s", KIND_NUMBER,
					   "be a number of seconds > 0 and <= 86400", 0,
					   MAX_TIMEOUT_S, 1 },
	[POLICY_TEMPERATURE] = { "temperature", KIND_NUMBER, "be a number from 0 to 2", 0, 2 },
	[POLICY_SYSTEM] = { "system", KIND_STRING, "be UTF-8 text without NUL bytes" },
	[POLICY_UMASK] = { "umask", KIND_OCTAL,
			   "be an octal string from \"000\" to \"777\", such as \"077\"" },
	[POLICY_AUDIT_PROMPTS] = { "audit_prompts", KIND_WORD, "be true or false", 0, 0, 0,
				   boolean_words },
	[POLICY_PROMPT_FORMAT] = { "prompt_format", KIND_WORD, "be one of auto, text, json", 0, 0,
				   0, format_words },
};

/* One key's value on its way into or out of a policy. Only the member
 * of the key's kind is meaningful. */
struct policy_value {
	struct policy_list list;
	double number;
	long integer;
	int word;
	char *string;
	unsigned octal;
};

static void err_set(char *err, size_t err_size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void err_set(char *err, size_t err_size, const char *fmt, ...)
{
	va_list ap;

	if (!err || err_size == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, err_size, fmt, ap);
	va_end(ap);
}

static int rule_broken(enum policy_key key, char *err, size_t err_size)
{
	err_set(err, err_size, "%s must %s", keys[key].name, keys[key].rule);
	return -EINVAL;
}

static int is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static char *bytes_dup(const char *bytes, size_t len)
{
	char *copy;

	copy = malloc(len + 1);
	if (!copy)
		return NULL;
	memcpy(copy, bytes, len);
	copy[len] = '\0';
	return copy;
}

const char *policy_key_name(enum policy_key key)
{
	if ((unsigned)key >= POLICY_N_KEYS)
		return NULL;
	return keys[key].name;
}

int policy_key_from_name(const char *name)
{
	int key;

	for (key = 0; key < POLICY_N_KEYS; key++) {
		if (strcmp(name, keys[key].name) == 0)
			return key;
	}
	return -EINVAL;
}

const char *policy_budget_period_name(enum policy_budget_period period)
{
	if ((unsigned)period > POLICY_PERIOD_TOTAL)
		return NULL;
	return period_words[period];
}

/* Lists */

static void list_release(struct policy_list *list)
{
	size_t i;

	for (i = 0; i < list->n; i++)
		free(list->names[i]);
	free(list->names);
	list->names = NULL;
	list->n = 0;
}

static int list_contains(const struct policy_list *list, const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < list->n; i++) {
		if (strlen(list->names[i]) == len && memcmp(list->names[i], name, len) == 0)
			return 1;
	}
	return 0;
}

/* Whether NAME (LEN bytes) may be a list item: the xattr view must be
 * able to say it, comma-separated and trimmed. */
static int name_is_valid(const char *name, size_t len)
{
	size_t i;

	if (len == 0 || is_blank(name[0]) || is_blank(name[len - 1]))
		return 0;
	for (i = 0; i < len; i++) {
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f || name[i] == ',')
			return 0;
	}
	return utf8_invalid_offset(name, len) == len;
}

/* Appends NAME unless LIST has it already. 0, or -ENOMEM. */
static int list_add(struct policy_list *list, const char *name, size_t len)
{
	char **names;
	char *copy;

	if (list_contains(list, name, len))
		return 0;
	copy = bytes_dup(name, len);
	if (!copy)
		return -ENOMEM;
	names = realloc(list->names, (list->n + 1) * sizeof(*names));
	if (!names) {
		free(copy);
		return -ENOMEM;
	}
	names[list->n++] = copy;
	list->names = names;
	return 0;
}

static int list_copy(struct policy_list *dst, const struct policy_list *src)
{
	size_t i;

	memset(dst, 0, sizeof(*dst));
	for (i = 0; i < src->n; i++) {
		if (list_add(dst, src->names[i], strlen(src->names[i])) < 0) {
			list_release(dst);
			return -ENOMEM;
		}
	}
	return 0;
}

static int list_equal(const struct policy_list *a, const struct policy_list *b)
{
	size_t i;

	if (a->n != b->n)
		return 0;
	for (i = 0; i < a->n; i++) {
		if (strcmp(a->names[i], b->names[i]) != 0)
			return 0;
	}
	return 1;
}

/* Values */

static void value_release(struct policy_value *v)
{
	list_release(&v->list);
	free(v->string);
	v->string = NULL;
}

/* The range checks, shared by both views. */
static int value_check(enum policy_key key, const struct policy_value *v, char *err,
		       size_t err_size)
{
	const struct key_info *info = &keys[key];
	double number;

	switch (info->kind) {
	case KIND_NUMBER:
	case KIND_INTEGER:
		number = info->kind == KIND_NUMBER ? v->number : (double)v->integer;
		if (!isfinite(number) && info->kind == KIND_NUMBER)
			return rule_broken(key, err, err_size);
		if (number < info->min || number > info->max ||
		    (info->min_exclusive && number == info->min))
			return rule_broken(key, err, err_size);
		return 0;
	case KIND_OCTAL:
		return v->octal > MAX_UMASK ? rule_broken(key, err, err_size) : 0;
	case KIND_LIST:
	case KIND_WORD:
	case KIND_STRING:
		return 0;
	}
	return 0;
}

/* Borrows KEY's value from P into *V. */
static void value_load(const struct policy *p, enum policy_key key, struct policy_value *v)
{
	memset(v, 0, sizeof(*v));
	switch (key) {
	case POLICY_PROVIDERS:
		v->list = p->providers;
		break;
	case POLICY_RESIDENCY:
		v->list = p->residency;
		break;
	case POLICY_MAX_REQUEST_USD:
		v->number = p->max_request_usd;
		break;
	case POLICY_MAX_OUTPUT_TOKENS:
		v->integer = p->max_output_tokens;
		break;
	case POLICY_MAX_PROMPT_BYTES:
		v->integer = p->max_prompt_bytes;
		break;
	case POLICY_BUDGET_USD:
		v->number = p->budget_usd;
		break;
	case POLICY_BUDGET_PERIOD:
		v->word = (int)p->budget_period;
		break;
	case POLICY_FALLBACK:
		v->word = p->fallback ? 1 : 0;
		break;
	case POLICY_ORDER:
		v->word = (int)p->order;
		break;
	case POLICY_RETRIES:
		v->integer = p->retries;
		break;
	case POLICY_TIMEOUT_S:
		v->number = p->timeout_s;
		break;
	case POLICY_FIRST_TOKEN_TIMEOUT_S:
		v->number = p->first_token_timeout_s;
		break;
	case POLICY_TEMPERATURE:
		v->number = p->temperature;
		break;
	case POLICY_SYSTEM:
		v->string = p->system;
		break;
	case POLICY_UMASK:
		v->octal = p->umask;
		break;
	case POLICY_AUDIT_PROMPTS:
		v->word = p->audit_prompts ? 1 : 0;
		break;
	case POLICY_PROMPT_FORMAT:
		v->word = (int)p->prompt_format;
		break;
	case POLICY_N_KEYS:
		break;
	}
}

/* Moves *V into KEY's field of P, freeing what the field held, and
 * marks KEY set. *V is left holding nothing. */
static void value_store(struct policy *p, enum policy_key key, struct policy_value *v)
{
	switch (key) {
	case POLICY_PROVIDERS:
		list_release(&p->providers);
		p->providers = v->list;
		break;
	case POLICY_RESIDENCY:
		list_release(&p->residency);
		p->residency = v->list;
		break;
	case POLICY_MAX_REQUEST_USD:
		p->max_request_usd = v->number;
		break;
	case POLICY_MAX_OUTPUT_TOKENS:
		p->max_output_tokens = v->integer;
		break;
	case POLICY_MAX_PROMPT_BYTES:
		p->max_prompt_bytes = v->integer;
		break;
	case POLICY_BUDGET_USD:
		p->budget_usd = v->number;
		break;
	case POLICY_BUDGET_PERIOD:
		p->budget_period = (enum policy_budget_period)v->word;
		break;
	case POLICY_FALLBACK:
		p->fallback = v->word;
		break;
	case POLICY_ORDER:
		p->order = (enum policy_order)v->word;
		break;
	case POLICY_RETRIES:
		p->retries = v->integer;
		break;
	case POLICY_TIMEOUT_S:
		p->timeout_s = v->number;
		break;
	case POLICY_FIRST_TOKEN_TIMEOUT_S:
		p->first_token_timeout_s = v->number;
		break;
	case POLICY_TEMPERATURE:
		p->temperature = v->number;
		break;
	case POLICY_SYSTEM:
		free(p->system);
		p->system = v->string;
		break;
	case POLICY_UMASK:
		p->umask = v->octal;
		break;
	case POLICY_AUDIT_PROMPTS:
		p->audit_prompts = v->word;
		break;
	case POLICY_PROMPT_FORMAT:
		p->prompt_format = (enum policy_prompt_format)v->word;
		break;
	case POLICY_N_KEYS:
		return;
	}
	memset(v, 0, sizeof(*v));
	p->set |= POLICY_BIT(key);
}

/* A deep copy of SRC, a value of KEY's kind. 0, or -ENOMEM. */
static int value_dup(enum policy_key key, const struct policy_value *src, struct policy_value *dst)
{
	*dst = *src;
	memset(&dst->list, 0, sizeof(dst->list));
	dst->string = NULL;
	if (keys[key].kind == KIND_LIST)
		return list_copy(&dst->list, &src->list);
	if (keys[key].kind == KIND_STRING) {
		dst->string = strdup(src->string);
		return dst->string ? 0 : -ENOMEM;
	}
	return 0;
}

static int value_equal(enum policy_key key, const struct policy_value *a,
		       const struct policy_value *b)
{
	switch (keys[key].kind) {
	case KIND_LIST:
		return list_equal(&a->list, &b->list);
	case KIND_NUMBER:
		return a->number == b->number;
	case KIND_INTEGER:
		return a->integer == b->integer;
	case KIND_WORD:
		return a->word == b->word;
	case KIND_STRING:
		return strcmp(a->string, b->string) == 0;
	case KIND_OCTAL:
		return a->octal == b->octal;
	}
	return 0;
}

/* Growing text, for both views' output. An allocation failure is
 * remembered and reported once, by text_finish. */
struct text {
	char *buf;
	size_t len;
	size_t cap;
	int failed;
};

static void text_add(struct text *t, const char *bytes, size_t len)
{
	size_t cap;
	char *buf;

	if (t->failed)
		return;
	if (t->len + len + 1 > t->cap) {
		cap = t->cap ? t->cap : 64;
		while (t->len + len + 1 > cap)
			cap *= 2;
		buf = realloc(t->buf, cap);
		if (!buf) {
			t->failed = 1;
			return;
		}
		t->buf = buf;
		t->cap = cap;
	}
	memcpy(t->buf + t->len, bytes, len);
	t->len += len;
	t->buf[t->len] = '\0';
}

static void text_adds(struct text *t, const char *s)
{
	text_add(t, s, strlen(s));
}

/* The text made, which the caller frees; NULL when out of memory. */
static char *text_finish(struct text *t)
{
	text_add(t, "", 0);
	if (t->failed) {
		free(t->buf);
		return NULL;
	}
	return t->buf;
}

/* S as a JSON string. UTF-8 stays as it is: `.policy` is for people to
 * read. */
static void text_add_json_string(struct text *t, const char *s)
{
	char escape[8];
	size_t run;

	text_adds(t, "\"");
	while (*s) {
		/* Copies the run of bytes that need no escape at once. */
		for (run = 0;
		     s[run] && (unsigned char)s[run] >= 0x20 && s[run] != '"' && s[run] != '\\';
		     run++)
			;
		text_add(t, s, run);
		s += run;
		if (!*s)
			break;
		if (*s == '"' || *s == '\\')
			snprintf(escape, sizeof(escape), "\\%c", *s);
		else if (*s == '\n')
			snprintf(escape, sizeof(escape), "\\n");
		else if (*s == '\t')
			snprintf(escape, sizeof(escape), "\\t");
		else if (*s == '\r')
			snprintf(escape, sizeof(escape), "\\r");
		else
			snprintf(escape, sizeof(escape), "\\u%04x", (unsigned char)*s);
		text_adds(t, escape);
		s++;
	}
	text_adds(t, "\"");
}

/* The shortest decimal that strtod reads back as V. Whole numbers are
 * written out in full: a budget of 1000000 reads better than 1e+06. */
static void number_format(double v, char buf[NUMBER_TEXT_MAX])
{
	int precision;

	if (v == floor(v) && fabs(v) < 1e15) {
		snprintf(buf, NUMBER_TEXT_MAX, "%.0f", v);
		return;
	}
	for (precision = 1; precision < 17; precision++) {
		snprintf(buf, NUMBER_TEXT_MAX, "%.*g", precision, v);
		if (strtod(buf, NULL) == v)
			return;
	}
	snprintf(buf, NUMBER_TEXT_MAX, "%.17g", v);
}

/* KEY's value as xattr text, or as JSON when AS_JSON. */
static void value_text(struct text *t, enum policy_key key, const struct policy_value *v,
		       int as_json)
{
	const struct key_info *info = &keys[key];
	char number[NUMBER_TEXT_MAX];
	size_t i;

	switch (info->kind) {
	case KIND_LIST:
		text_adds(t, as_json ? "[" : "");
		for (i = 0; i < v->list.n; i++) {
			if (i > 0)
				text_adds(t, as_json ? ", " : ",");
			if (as_json)
				text_add_json_string(t, v->list.names[i]);
			else
				text_adds(t, v->list.names[i]);
		}
		text_adds(t, as_json ? "]" : "");
		return;
	case KIND_NUMBER:
		number_format(v->number, number);
		text_adds(t, number);
		return;
	case KIND_INTEGER:
		snprintf(number, sizeof(number), "%ld", v->integer);
		text_adds(t, number);
		return;
	case KIND_WORD:
		/* JSON's true and false are not strings; the other words are. */
		if (as_json && info->words != boolean_words)
			text_add_json_string(t, info->words[v->word]);
		else
			text_adds(t, info->words[v->word]);
		return;
	case KIND_STRING:
		if (as_json)
			text_add_json_string(t, v->string);
		else
			text_adds(t, v->string);
		return;
	case KIND_OCTAL:
		snprintf(number, sizeof(number), as_json ? "\"%03o\"" : "%03o", v->octal);
		text_adds(t, number);
		return;
	}
}

/* Reading values */

static int word_index(const char *const *words, const char *word, size_t len)
{
	int i;

	for (i = 0; words[i]; i++) {
		if (strlen(words[i]) == len && memcmp(words[i], word, len) == 0)
			return i;
	}
	return -1;
}

/* 1 to 4 octal digits ("077", "0077", "7"). 0 and *OUT set, or -EINVAL. */
static int octal_parse(const char *text, size_t len, unsigned *out)
{
	unsigned value = 0;
	size_t i;

	if (len == 0 || len > 4)
		return -EINVAL;
	for (i = 0; i < len; i++) {
		if (text[i] < '0' || text[i] > '7')
			return -EINVAL;
		value = value * 8 + (unsigned)(text[i] - '0');
	}
	*out = value;
	return 0;
}

/* Whether TEXT (LEN bytes) starts with a digit run at *I; moves past it. */
static int digits_skip(const char *text, size_t len, size_t *i)
{
	size_t start = *i;

	while (*i < len && text[*i] >= '0' && text[*i] <= '9')
		(*i)++;
	return *i > start;
}

/* A decimal number: [+-] digits [. digits] [e [+-] digits], where either
 * side of the point may be empty but not both. strtod alone would take
 * hex, inf and nan too. 0 and *OUT set, or -EINVAL. */
static int number_parse(const char *text, size_t len, double *out)
{
	char buf[NUMBER_TEXT_MAX * 2];
	size_t i = 0;
	int whole;
	int fraction = 0;

	if (len >= sizeof(buf))
		return -EINVAL;
	if (i < len && (text[i] == '+' || text[i] == '-'))
		i++;
	whole = digits_skip(text, len, &i);
	if (i < len && text[i] == '.') {
		i++;
		fraction = digits_skip(text, len, &i);
	}
	if (!whole && !fraction)
		return -EINVAL;
	if (i < len && (text[i] == 'e' || text[i] == 'E')) {
		i++;
		if (i < len && (text[i] == '+' || text[i] == '-'))
			i++;
		if (!digits_skip(text, len, &i))
			return -EINVAL;
	}
	if (i != len)
		return -EINVAL;
	memcpy(buf, text, len);
	buf[len] = '\0';
	*out = strtod(buf, NULL);
	return 0;
}

/* A decimal integer: [+-] digits, within a long. 0 or -EINVAL. */
static int integer_parse(const char *text, size_t len, long *out)
{
	char buf[NUMBER_TEXT_MAX];
	size_t i = 0;
	long value;

	if (len >= sizeof(buf))
		return -EINVAL;
	if (i < len && (text[i] == '+' || text[i] == '-'))
		i++;
	if (!digits_skip(text, len, &i) || i != len)
		return -EINVAL;
	memcpy(buf, text, len);
	buf[len] = '\0';
	errno = 0;
	value = strtol(buf, NULL, 10);
	if (errno == ERANGE)
		return -EINVAL;
	*out = value;
	return 0;
}

/* Adds the list item NAME (LEN bytes) to V's list. */
static int item_add(enum policy_key key, struct policy_value *v, const char *name, size_t len,
		    char *err, size_t err_size)
{
	if (!name_is_valid(name, len))
		return rule_broken(key, err, err_size);
	return list_add(&v->list, name, len);
}

/* KEY's value from its JSON in `.policy`. A list may also be one string,
 * as a region's geo may be in the config. */
static int value_from_json(enum policy_key key, json_t *json, struct policy_value *v, char *err,
			   size_t err_size)
{
	const struct key_info *info = &keys[key];
	json_t *item;
	size_t i;
	int rc;

	memset(v, 0, sizeof(*v));
	switch (info->kind) {
	case KIND_LIST:
		if (json_is_string(json))
			return item_add(key, v, json_string_value(json), json_string_length(json),
					err, err_size);
		if (!json_is_array(json))
			return rule_broken(key, err, err_size);
		json_array_foreach (json, i, item) {
			if (!json_is_string(item))
				return rule_broken(key, err, err_size);
			rc = item_add(key, v, json_string_value(item), json_string_length(item),
				      err, err_size);
			if (rc < 0)
				return rc;
		}
		return 0;
	case KIND_NUMBER:
		if (!json_is_number(json))
			return rule_broken(key, err, err_size);
		/* -0 is 0: it would otherwise be written back as "-0". */
		v->number = json_number_value(json) + 0.0;
		break;
	case KIND_INTEGER:
		if (!json_is_integer(json) || json_integer_value(json) > LONG_MAX ||
		    json_integer_value(json) < LONG_MIN)
			return rule_broken(key, err, err_size);
		v->integer = (long)json_integer_value(json);
		break;
	case KIND_WORD:
		if (info->words == boolean_words) {
			if (!json_is_boolean(json))
				return rule_broken(key, err, err_size);
			v->word = json_is_true(json);
			break;
		}
		v->word = json_is_string(json) ? word_index(info->words, json_string_value(json),
							    json_string_length(json))
					       : -1;
		if (v->word < 0)
			return rule_broken(key, err, err_size);
		break;
	case KIND_STRING:
		/* jansson refuses \u0000 in strings: no NUL gets here. */
		if (!json_is_string(json))
			return rule_broken(key, err, err_size);
		v->string = bytes_dup(json_string_value(json), json_string_length(json));
		return v->string ? 0 : -ENOMEM;
	case KIND_OCTAL:
		if (!json_is_string(json) ||
		    octal_parse(json_string_value(json), json_string_length(json), &v->octal) < 0)
			return rule_broken(key, err, err_size);
		break;
	}
	return value_check(key, v, err, err_size);
}

/* KEY's value from xattr text (LEN bytes, NULs included). */
static int value_from_text(enum policy_key key, const char *text, size_t len,
			   struct policy_value *v, char *err, size_t err_size)
{
	const struct key_info *info = &keys[key];
	const char *item;
	const char *end;
	size_t item_len;
	int rc;

	memset(v, 0, sizeof(*v));
	if (info->kind == KIND_STRING) {
		/* The system message is taken exactly, blanks included. */
		if (utf8_invalid_offset(text, len) != len)
			return rule_broken(key, err, err_size);
		v->string = bytes_dup(text, len);
		return v->string ? 0 : -ENOMEM;
	}
	/* `setfattr -v` passes what the shell gave it, so a newline or
	 * spaces around a value are no reason to refuse it. */
	while (len > 0 && is_blank(text[0])) {
		text++;
		len--;
	}
	while (len > 0 && is_blank(text[len - 1]))
		len--;
	switch (info->kind) {
	case KIND_LIST:
		/* "" is the empty list: nothing allowed. */
		while (len > 0) {
			end = memchr(text, ',', len);
			item = text;
			item_len = end ? (size_t)(end - text) : len;
			text += item_len + (end ? 1 : 0);
			len -= item_len + (end ? 1 : 0);
			while (item_len > 0 && is_blank(item[0])) {
				item++;
				item_len--;
			}
			while (item_len > 0 && is_blank(item[item_len - 1]))
				item_len--;
			/* "eu," ends in an empty name. */
			if (end && len == 0)
				return rule_broken(key, err, err_size);
			rc = item_add(key, v, item, item_len, err, err_size);
			if (rc < 0)
				return rc;
		}
		return 0;
	case KIND_NUMBER:
		if (number_parse(text, len, &v->number) < 0)
			return rule_broken(key, err, err_size);
		v->number += 0.0;
		break;
	case KIND_INTEGER:
		if (integer_parse(text, len, &v->integer) < 0)
			return rule_broken(key, err, err_size);
		break;
	case KIND_WORD:
		v->word = word_index(info->words, text, len);
		if (v->word < 0)
			return rule_broken(key, err, err_size);
		break;
	case KIND_OCTAL:
		if (octal_parse(text, len, &v->octal) < 0)
			return rule_broken(key, err, err_size);
		break;
	case KIND_STRING:
		break;
	}
	return value_check(key, v, err, err_size);
}

/* One policy */

/* KEY as it may appear in a one-line message: control characters shown
 * as '?', cut at a character boundary. */
static void key_echo(const char *key, char out[KEY_ECHO_BYTES + 1])
{
	size_t len = utf8_prefix_length(key, strlen(key), KEY_ECHO_BYTES);
	size_t i;

	for (i = 0; i < len; i++)
		out[i] = (unsigned char)key[i] < 0x20 ? '?' : key[i];
	out[len] = '\0';
}

static int policy_parse_object(json_t *root, struct policy *out, char *err, size_t err_size)
{
	char echo[KEY_ECHO_BYTES + 1];
	struct policy_value v;
	const char *name;
	json_t *json;
	int key;
	int rc;

	if (!json_is_object(root)) {
		err_set(err, err_size, "the policy must be a JSON object");
		return -EINVAL;
	}
	json_object_foreach (root, name, json) {
		key = policy_key_from_name(name);
		if (key < 0) {
			key_echo(name, echo);
			err_set(err, err_size, "unknown policy key \"%s\"", echo);
			return -EINVAL;
		}
		rc = value_from_json((enum policy_key)key, json, &v, err, err_size);
		if (rc < 0) {
			value_release(&v);
			return rc;
		}
		value_store(out, (enum policy_key)key, &v);
	}
	return 0;
}

int policy_parse(const char *text, size_t len, struct policy *out, char *err, size_t err_size)
{
	json_error_t jerr;
	json_t *root;
	size_t i;
	int rc;

	memset(out, 0, sizeof(*out));
	err_set(err, err_size, "%s", "");
	for (i = 0; i < len && is_blank(text[i]); i++)
		;
	/* An empty .policy is what `touch` or `> .policy` leaves. */
	if (i == len)
		return 0;
	/* Two "providers" keys would leave the policy ambiguous. */
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!root) {
		/* jansson's own text here names one of its flags, which means
		 * nothing to an admin. */
		err_set(err, err_size, "the policy is not valid JSON: %s at line %d column %d",
			json_error_code(&jerr) == json_error_null_character
				? "a string holds \\u0000, which is not allowed"
				: jerr.text,
			jerr.line, jerr.column);
		/* jansson quotes the bytes near the fault, control bytes
		 * included, and the sentence must stay one line. */
		for (i = 0; err && i < err_size && err[i]; i++) {
			if ((unsigned char)err[i] < 0x20)
				err[i] = '?';
		}
		return -EINVAL;
	}
	rc = policy_parse_object(root, out, err, err_size);
	json_decref(root);
	if (rc == -ENOMEM)
		err_set(err, err_size, "out of memory while reading the policy");
	if (rc < 0)
		policy_release(out);
	return rc;
}

char *policy_to_json(const struct policy *p)
{
	struct text t = { 0 };
	struct policy_value v;
	int key;
	int first = 1;

	text_adds(&t, "{");
	for (key = 0; key < POLICY_N_KEYS; key++) {
		if (!(p->set & POLICY_BIT(key)))
			continue;
		text_adds(&t, first ? "\n  \"" : ",\n  \"");
		text_adds(&t, keys[key].name);
		text_adds(&t, "\": ");
		value_load(p, (enum policy_key)key, &v);
		value_text(&t, (enum policy_key)key, &v, 1);
		first = 0;
	}
	text_adds(&t, first ? "}\n" : "\n}\n");
	return text_finish(&t);
}

int policy_set_value(struct policy *p, enum policy_key key, const char *value, size_t len,
		     char *err, size_t err_size)
{
	struct policy_value v;
	int rc;

	err_set(err, err_size, "%s", "");
	if ((unsigned)key >= POLICY_N_KEYS) {
		err_set(err, err_size, "unknown policy key");
		return -EINVAL;
	}
	rc = value_from_text(key, value, len, &v, err, err_size);
	if (rc < 0) {
		if (rc == -ENOMEM)
			err_set(err, err_size, "out of memory while reading the policy");
		value_release(&v);
		return rc;
	}
	value_store(p, key, &v);
	return 0;
}

int policy_unset(struct policy *p, enum policy_key key)
{
	struct policy_value none;

	if ((unsigned)key >= POLICY_N_KEYS || !(p->set & POLICY_BIT(key)))
		return -ENODATA;
	memset(&none, 0, sizeof(none));
	/* Storing nothing frees what the field held and zeroes it, as in a
	 * policy that never set it. */
	value_store(p, key, &none);
	p->set &= ~POLICY_BIT(key);
	return 0;
}

int policy_get_value(const struct policy *p, enum policy_key key, char **out)
{
	struct text t = { 0 };
	struct policy_value v;

	*out = NULL;
	if ((unsigned)key >= POLICY_N_KEYS || !(p->set & POLICY_BIT(key)))
		return -ENODATA;
	value_load(p, key, &v);
	value_text(&t, key, &v, 0);
	*out = text_finish(&t);
	return *out ? 0 : -ENOMEM;
}

ssize_t policy_list_keys(const struct policy *p, char *buf, size_t size)
{
	size_t prefix_len = strlen(POLICY_XATTR_PREFIX);
	size_t needed = 0;
	size_t name_len;
	size_t at = 0;
	int key;

	for (key = 0; key < POLICY_N_KEYS; key++) {
		if (p->set & POLICY_BIT(key))
			needed += prefix_len + strlen(keys[key].name) + 1;
	}
	if (size == 0)
		return (ssize_t)needed;
	if (size < needed)
		return -ERANGE;
	for (key = 0; key < POLICY_N_KEYS; key++) {
		if (!(p->set & POLICY_BIT(key)))
			continue;
		name_len = strlen(keys[key].name);
		memcpy(buf + at, POLICY_XATTR_PREFIX, prefix_len);
		memcpy(buf + at + prefix_len, keys[key].name, name_len + 1);
		at += prefix_len + name_len + 1;
	}
	return (ssize_t)needed;
}

int policy_copy(struct policy *dst, const struct policy *src)
{
	struct policy_value from;
	struct policy_value to;
	int key;

	memset(dst, 0, sizeof(*dst));
	for (key = 0; key < POLICY_N_KEYS; key++) {
		if (!(src->set & POLICY_BIT(key)))
			continue;
		value_load(src, (enum policy_key)key, &from);
		if (value_dup((enum policy_key)key, &from, &to) < 0) {
			value_release(&to);
			policy_release(dst);
			return -ENOMEM;
		}
		value_store(dst, (enum policy_key)key, &to);
	}
	return 0;
}

int policy_equal(const struct policy *a, const struct policy *b)
{
	struct policy_value va;
	struct policy_value vb;
	int key;

	if (a->set != b->set)
		return 0;
	for (key = 0; key < POLICY_N_KEYS; key++) {
		if (!(a->set & POLICY_BIT(key)))
			continue;
		value_load(a, (enum policy_key)key, &va);
		value_load(b, (enum policy_key)key, &vb);
		if (!value_equal((enum policy_key)key, &va, &vb))
			return 0;
	}
	return 1;
}

void policy_release(struct policy *p)
{
	if (!p)
		return;
	list_release(&p->providers);
	list_release(&p->residency);
	free(p->system);
	memset(p, 0, sizeof(*p));
}

/* Composition */

/* Narrows the list in force (*CONSTRAINED, *LIST) by one level's LEVEL:
 * the first level to set it gives the list, each later one removes what
 * it does not name. 0, or -ENOMEM. */
static int constraint_narrow(int *constrained, struct policy_list *list,
			     const struct policy_list *level)
{
	size_t kept = 0;
	size_t i;

	if (!*constrained) {
		*constrained = 1;
		return list_copy(list, level);
	}
	for (i = 0; i < list->n; i++) {
		if (list_contains(level, list->names[i], strlen(list->names[i])))
			list->names[kept++] = list->names[i];
		else
			free(list->names[i]);
	}
	list->n = kept;
	return 0;
}

static int level_sets(const struct policy *p, enum policy_key key)
{
	return p && (p->set & POLICY_BIT(key));
}

int policy_compose(const struct policy *const *chain, size_t n, int under_any,
		   struct effective_policy *out)
{
	const struct policy *p;
	const char *system = NULL;
	size_t n_budgets = 0;
	int prompt_cap_set = 0;
	size_t i;
	int rc = -ENOMEM;

	memset(out, 0, sizeof(*out));
	out->max_prompt_bytes = POLICY_DEFAULT_MAX_PROMPT_BYTES;
	out->fallback = under_any ? 1 : 0;
	out->order = POLICY_ORDER_CONFIG;
	out->retries = POLICY_DEFAULT_RETRIES;
	out->prompt_format = POLICY_FORMAT_AUTO;
	for (i = 0; i < n; i++)
		n_budgets += level_sets(chain[i], POLICY_BUDGET_USD);
	if (n_budgets > 0) {
		out->budgets = calloc(n_budgets, sizeof(*out->budgets));
		if (!out->budgets)
			goto out;
	}
	for (i = 0; i < n; i++) {
		p = chain[i];
		if (!p)
			continue;
		if (level_sets(p, POLICY_PROVIDERS) &&
		    constraint_narrow(&out->providers_constrained, &out->providers, &p->providers) <
			    0)
			goto out;
		if (level_sets(p, POLICY_RESIDENCY) &&
		    constraint_narrow(&out->residency_constrained, &out->residency, &p->residency) <
			    0)
			goto out;
		if (level_sets(p, POLICY_MAX_REQUEST_USD) &&
		    (!out->has_max_request_usd || p->max_request_usd < out->max_request_usd)) {
			out->has_max_request_usd = 1;
			out->max_request_usd = p->max_request_usd;
		}
		if (level_sets(p, POLICY_MAX_OUTPUT_TOKENS) &&
		    (out->max_output_tokens == 0 || p->max_output_tokens < out->max_output_tokens))
			out->max_output_tokens = p->max_output_tokens;
		/* The default is for a path that sets no cap: the root's
		 * policy may raise it, to allow larger prompts everywhere. */
		if (level_sets(p, POLICY_MAX_PROMPT_BYTES) &&
		    (!prompt_cap_set || p->max_prompt_bytes < out->max_prompt_bytes)) {
			prompt_cap_set = 1;
			out->max_prompt_bytes = p->max_prompt_bytes;
		}
		if (level_sets(p, POLICY_BUDGET_USD)) {
			out->budgets[out->n_budgets].level = i;
			out->budgets[out->n_budgets].usd = p->budget_usd;
			out->budgets[out->n_budgets].period = level_sets(p, POLICY_BUDGET_PERIOD)
								      ? p->budget_period
								      : POLICY_PERIOD_MONTH;
			out->n_budgets++;
		}
		if (level_sets(p, POLICY_FALLBACK))
			out->fallback = p->fallback;
		if (level_sets(p, POLICY_ORDER))
			out->order = p->order;
		if (level_sets(p, POLICY_RETRIES))
			out->retries = p->retries;
		if (level_sets(p, POLICY_TIMEOUT_S))
			out->timeout_s = p->timeout_s;
		if (level_sets(p, POLICY_FIRST_TOKEN_TIMEOUT_S))
			out->first_token_timeout_s = p->first_token_timeout_s;
		if (level_sets(p, POLICY_TEMPERATURE)) {
			out->has_temperature = 1;
			out->temperature = p->temperature;
		}
		if (level_sets(p, POLICY_SYSTEM))
			system = p->system;
		if (level_sets(p, POLICY_UMASK))
			out->umask = p->umask;
		if (level_sets(p, POLICY_AUDIT_PROMPTS))
			out->audit_prompts = p->audit_prompts;
		if (level_sets(p, POLICY_PROMPT_FORMAT))
			out->prompt_format = p->prompt_format;
	}
	if (system) {
		out->system = strdup(system);
		if (!out->system)
			goto out;
	}
	rc = 0;
out:
	if (rc < 0)
		effective_release(out);
	return rc;
}

int effective_get_value(const struct effective_policy *e, enum policy_key key, char **out)
{
	struct policy view;

	*out = NULL;
	if (key == POLICY_BUDGET_USD || key == POLICY_BUDGET_PERIOD)
		return -ENODATA;
	/* A policy that borrows E's values and sets what is in force, so
	 * both xattr views format alike. Never released. */
	memset(&view, 0, sizeof(view));
	view.set = POLICY_BIT(POLICY_MAX_PROMPT_BYTES) | POLICY_BIT(POLICY_FALLBACK) |
		   POLICY_BIT(POLICY_ORDER) | POLICY_BIT(POLICY_RETRIES) |
		   POLICY_BIT(POLICY_UMASK) | POLICY_BIT(POLICY_AUDIT_PROMPTS) |
		   POLICY_BIT(POLICY_PROMPT_FORMAT);
	if (e->providers_constrained)
		view.set |= POLICY_BIT(POLICY_PROVIDERS);
	if (e->residency_constrained)
		view.set |= POLICY_BIT(POLICY_RESIDENCY);
	if (e->has_max_request_usd)
		view.set |= POLICY_BIT(POLICY_MAX_REQUEST_USD);
	if (e->max_output_tokens > 0)
		view.set |= POLICY_BIT(POLICY_MAX_OUTPUT_TOKENS);
	if (e->timeout_s > 0)
		view.set |= POLICY_BIT(POLICY_TIMEOUT_S);
	if (e->first_token_timeout_s > 0)
		view.set |= POLICY_BIT(POLICY_FIRST_TOKEN_TIMEOUT_S);
	if (e->has_temperature)
		view.set |= POLICY_BIT(POLICY_TEMPERATURE);
	if (e->system)
		view.set |= POLICY_BIT(POLICY_SYSTEM);
	view.providers = e->providers;
	view.residency = e->residency;
	view.max_request_usd = e->max_request_usd;
	view.max_output_tokens = e->max_output_tokens;
	view.max_prompt_bytes = e->max_prompt_bytes;
	view.fallback = e->fallback;
	view.order = e->order;
	view.retries = e->retries;
	view.timeout_s = e->timeout_s;
	view.first_token_timeout_s = e->first_token_timeout_s;
	view.temperature = e->temperature;
	view.system = e->system;
	view.umask = e->umask;
	view.audit_prompts = e->audit_prompts;
	view.prompt_format = e->prompt_format;
	return policy_get_value(&view, key, out);
}

int effective_allows(const struct effective_policy *e, const char *cloud,
		     const char *const *geo_tags, size_t n_tags)
{
	size_t i;

	if (e->providers_constrained && !list_contains(&e->providers, cloud, strlen(cloud)))
		return 0;
	if (!e->residency_constrained)
		return 1;
	for (i = 0; i < n_tags; i++) {
		if (list_contains(&e->residency, geo_tags[i], strlen(geo_tags[i])))
			return 1;
	}
	return 0;
}

int effective_allows_model(const struct effective_policy *e, const struct model *model)
{
	const struct region *region = model->region;

	return effective_allows(e, region->cloud->name, (const char *const *)region->geo,
				region->n_geo);
}

void effective_release(struct effective_policy *e)
{
	if (!e)
		return;
	list_release(&e->providers);
	list_release(&e->residency);
	free(e->budgets);
	free(e->system);
	free(e->dirs);
	memset(e, 0, sizeof(*e));
}

double policy_worst_case_usd(size_t prompt_bytes, size_t system_bytes, size_t n_messages,
			     long max_output_tokens, double input_per_mtok, double output_per_mtok)
{
	double input_tokens;
	double cost;

	input_tokens = (double)prompt_bytes + (double)system_bytes +
		       (double)COST_BYTES_PER_MESSAGE * (double)n_messages;
	cost = input_tokens * input_per_mtok / 1e6;
	if (output_per_mtok == 0)
		return cost;
	/* Without a bound the answer could cost anything. */
	if (max_output_tokens <= 0)
		return HUGE_VAL;
	return cost + (double)max_output_tokens * output_per_mtok / 1e6;
}
