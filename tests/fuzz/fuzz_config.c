/* libFuzzer target: the config loader must refuse any input cleanly; what it
 * accepts goes through a SIGHUP's apply over the defaults (and back). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "stockalert/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg = NULL;
	char err[256];

	if (config_load_string((const char *)data, size, &cfg, err, sizeof err) == 0) {
		struct config *run = config_new_defaults();
		char restart[128];

		config_apply_live(run, cfg, restart, sizeof restart);
		config_apply_live(run, cfg, restart, sizeof restart);
		if (memchr(restart, '\0', sizeof restart) == NULL)
			__builtin_trap();
		config_free(run);
		config_free(cfg);
		return 0;
	}
	/* A refusal must always explain itself, NUL-terminated. */
	if (cfg != NULL || memchr(err, '\0', sizeof err) == NULL || err[0] == '\0')
		__builtin_trap();
	return 0;
}
