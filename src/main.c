/*
 * stockalertd: command line. Parses arguments, loads the configuration and
 * hands over to the server (the loop owner), or runs a one-shot command
 * (gentoken, --check-config).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stockalert/auth.h"
#include "stockalert/config.h"
#include "stockalert/log.h"
#include "stockalert/mem.h"
#include "stockalert/server.h"
#include "stockalert/version.h"

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: stockalertd -c FILE            run the server\n"
		"       stockalertd -c FILE --check-config\n"
		"                                      validate the configuration; exit 0 or 1\n"
		"       stockalertd gentoken --sub ID [--roles a,b] [--ttl S] [--kid K] -c FILE\n"
		"                                      print a token signed with auth.secret_file\n"
		"                                      (or the HS256 key K of auth.keys)\n"
		"       stockalertd --config-keys       print every configuration key, its type,\n"
		"                                      default and bounds (JSON)\n"
		"       stockalertd --version | --help\n"
		"\n"
		"Exit codes: 0 clean stop, 1 bad configuration or arguments, 2 could not start.\n"
		"Signals: TERM/INT stop gracefully, HUP reloads the configuration.\n");
}

static int load_config(const char *path, struct config **cfg)
{
	char err[512];
	if (!path) {
		fprintf(stderr, "stockalertd: missing -c FILE\n");
		return 1;
	}
	if (config_load(path, cfg, err, sizeof err) != 0) {
		fprintf(stderr, "stockalertd: %s: %s\n", path, err);
		return 1;
	}
	return 0;
}

/* strtoll that accepts only a whole decimal number in [min, max]. */
static int parse_ll(const char *s, long long min, long long max, long long *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int cmd_gentoken(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"sub", required_argument, NULL, 's'},
	    {"roles", required_argument, NULL, 'r'},
	    {"ttl", required_argument, NULL, 't'},
	    {"config", required_argument, NULL, 'c'},
	    {"kid", required_argument, NULL, 'k'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *sub = NULL, *roles = NULL, *path = NULL, *kid = NULL;
	long long ttl = 3600;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "s:r:t:c:k:h", opts, NULL)) != -1) {
		switch (c) {
		case 's': sub = optarg; break;
		case 'r': roles = optarg; break;
		case 'c': path = optarg; break;
		case 'k': kid = optarg; break;
		case 't':
			if (parse_ll(optarg, 1, 10LL * 365 * 86400, &ttl) != 0) {
				fprintf(stderr,
					"stockalertd gentoken: --ttl: seconds, 1 or more\n");
				return 1;
			}
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 1;
		}
	}
	if (!sub || !auth_valid_sub(sub)) {
		fprintf(stderr,
			"stockalertd gentoken: --sub: 1-64 characters of [A-Za-z0-9_.:-]\n");
		return 1;
	}
	struct config *cfg;
	if (load_config(path, &cfg) != 0)
		return 1;
	/* stdout is the token; stderr only for what went wrong. */
	log_setup(LOG_LEVEL_WARN, LOG_FORMAT_TEXT);
	char err[512];
	int rc = 1;
	struct auth *a = auth_new(&cfg->auth, err, sizeof err);
	if (!a) {
		fprintf(stderr, "stockalertd gentoken: %s\n", err);
		goto out;
	}
	char *tok = auth_sign(a, kid, sub, roles, ttl, (long long)time(NULL), err, sizeof err);
	if (!tok) {
		fprintf(stderr, "stockalertd gentoken: %s\n", err);
		goto out;
	}
	printf("%s\n", tok);
	mem_free(tok);
	rc = 0;
out:
	auth_free(a);
	config_free(cfg);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"check-config", no_argument, NULL, 'k'},
	    {"version", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *path = NULL;
	int check = 0, c;

	if (argc > 1 && strcmp(argv[1], "gentoken") == 0)
		return cmd_gentoken(argc - 1, argv + 1);
	/* The table conf/stockalertd.json documents, for tests and tools. */
	if (argc == 2 && strcmp(argv[1], "--config-keys") == 0)
		return config_write_keys(stdout) == 0 && fflush(stdout) == 0 ? 0 : 1;

	while ((c = getopt_long(argc, argv, "c:hv", opts, NULL)) != -1) {
		switch (c) {
		case 'c': path = optarg; break;
		case 'k': check = 1; break;
		case 'v': printf("stockalertd %s\n", STOCKALERT_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "stockalertd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 1;
	}

	struct config *cfg;
	if (load_config(path, &cfg) != 0)
		return 1;
	if (check) {
		log_setup(LOG_LEVEL_WARN, LOG_FORMAT_TEXT);
		/* Key files are part of the configuration: check they load. */
		char err[512];
		struct auth *a = auth_new(&cfg->auth, err, sizeof err);
		if (!a || config_check_files(cfg, err, sizeof err) != 0) {
			fprintf(stderr, "stockalertd: %s: %s\n", path, err);
			auth_free(a);
			config_free(cfg);
			return 1;
		}
		auth_free(a);
		config_free(cfg);
		printf("stockalertd: %s: configuration OK\n", path);
		return 0;
	}

	log_setup((enum log_level)cfg->log.level, (enum log_format)cfg->log.format);
	log_route_lws();
	log_info("main", "stockalertd %s starting", STOCKALERT_VERSION);

	int code;
	struct server *s = server_new(cfg, path, &code);
	if (!s)
		return code;
	code = server_run(s);
	server_free(s);
	/* The last window's "lines suppressed" count is still owed. */
	log_flush();
	return code;
}
