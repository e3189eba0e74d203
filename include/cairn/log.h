/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logging with syslog levels.  Core code logs at LOG_DEBUG only; the front
 * with the most context logs once.  Fronts may route the output (cairnfs
 * sends it to syslog once daemonized; libfuse's log is routed here).
 */
#pragma once

#include <stdarg.h>
#include <syslog.h>

typedef void (*cairn_log_func_t)(int level, const char *msg);

void cairn_log_set_level(int max_level);
int cairn_log_get_level(void);
/* NULL restores the default (stderr, "PROGRAM: message"). */
void cairn_log_set_func(cairn_log_func_t func);
void cairn_log_set_program(const char *name);

/*
 * Text for a -errno from libcairn, worded for what it means there (e.g.
 * -EKEYREJECTED is a TLS certificate that failed verification); falls
 * back to strerror().
 */
const char *cairn_error_string(int r);

void cairn_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cairn_logv(int level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#define cairn_debug(...) cairn_log(LOG_DEBUG, __VA_ARGS__)
#define cairn_info(...) cairn_log(LOG_INFO, __VA_ARGS__)
#define cairn_warn(...) cairn_log(LOG_WARNING, __VA_ARGS__)
#define cairn_err(...) cairn_log(LOG_ERR, __VA_ARGS__)
