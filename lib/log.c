/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Process-wide logging.  The default sink writes "program: message" lines
 * to stderr; daemons install a syslog sink once they detach.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cairn/log.h"

static int max_level = LOG_INFO;
static cairn_log_func_t sink;
static const char *program = "cairn";

void cairn_log_set_level(int level)
{
        max_level = level;
}

int cairn_log_get_level(void)
{
        return max_level;
}

void cairn_log_set_func(cairn_log_func_t func)
{
        sink = func;
}

void cairn_log_set_program(const char *name)
{
        program = name;
}

void cairn_logv(int level, const char *fmt, va_list ap)
{
        if (level > max_level)
                return;
        char msg[1024];
        vsnprintf(msg, sizeof(msg), fmt, ap);
        /* Messages are lines; strip a trailing newline from callers that add one. */
        size_t n = strlen(msg);
        if (n && msg[n - 1] == '\n')
                msg[n - 1] = '\0';
        if (sink)
                sink(level, msg);
        else
                fprintf(stderr, "%s: %s\n", program, msg);
}

void cairn_log(int level, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        cairn_logv(level, fmt, ap);
        va_end(ap);
}

const char *cairn_error_string(int r)
{
        switch (r) {
        case -EKEYREJECTED:
                return "TLS certificate verification failed (use --ca-file, or --insecure for "
                       "testing)";
        case -EACCES:
                return "access denied by the store (check the credentials)";
        case -ETIMEDOUT:
                return "the store did not answer within the deadline";
        case -EPROTONOSUPPORT:
                return "unsupported store URL";
        default:
                return strerror(-r);
        }
}
