#include "stockalert/keys.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

static int build(char *out, size_t outlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int build(char *out, size_t outlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, outlen, fmt, ap);
	va_end(ap);
	return n >= 0 && (size_t)n < outlen ? 0 : -1;
}

int keys_name(char *out, size_t outlen, const char *prefix, const char *name)
{
	return build(out, outlen, "%s%s", prefix, name);
}

int keys_user_subs(char *out, size_t outlen, const char *prefix, const char *user)
{
	return build(out, outlen, "%suser:%s:subs", prefix, user);
}

int keys_product_subs(char *out, size_t outlen, const char *prefix, int64_t product)
{
	return build(out, outlen, "%sproduct:%" PRId64 ":subs", prefix, product);
}

int keys_sub(char *out, size_t outlen, const char *prefix, const char *user, int64_t product)
{
	return build(out, outlen, "%ssub:%s:%" PRId64, prefix, user, product);
}

int keys_sub_of(char *out, size_t outlen, const char *prefix, const char *user)
{
	return build(out, outlen, "%ssub:%s:", prefix, user);
}

int keys_product_thr(char *out, size_t outlen, const char *prefix, int64_t product)
{
	return build(out, outlen, "%sproduct:%" PRId64 ":thr", prefix, product);
}

int keys_online(char *out, size_t outlen, const char *prefix, const char *user)
{
	return build(out, outlen, "%sonline:%s", prefix, user);
}

int keys_event(char *out, size_t outlen, const char *prefix, const char *idk)
{
	return build(out, outlen, "%sevent:%s", prefix, idk);
}

int keys_event_instances(char *out, size_t outlen, const char *prefix, const char *idk)
{
	return build(out, outlen, "%sevent:%s:i", prefix, idk);
}

int keys_stock(char *out, size_t outlen, const char *prefix, int64_t product)
{
	return build(out, outlen, "%sstock:%" PRId64, prefix, product);
}

int keys_rate(char *out, size_t outlen, const char *prefix, const char *user, int64_t window)
{
	return build(out, outlen, "%srate:%s:%" PRId64, prefix, user, window);
}
