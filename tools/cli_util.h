/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared pieces of the `cairn` CLI: the command table, error reporting in
 * the one format every command uses ("cairn: CMD: message", one line on
 * stderr), and strict parsers for the values options take.
 *
 * The parsers are strict on purpose: a size or count that does not parse
 * completely, or does not fit, is a usage error rather than a silently
 * truncated value that turns into a surprising build.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct cairn_ref;
struct cairn_store;
struct cairn_volume;

/* Exit codes, documented in `cairn --help`. */
#define CLI_EXIT_OK      0
#define CLI_EXIT_FAILURE 1
#define CLI_EXIT_USAGE   2

struct cli_command {
        const char *name;
        const char *summary;               /* one line for `cairn --help` */
        int (*run)(int argc, char **argv); /* argv[0] is the command name; returns an exit code */
        void (*help)(FILE *out);           /* full help, lines within 80 columns */
};

extern const struct cli_command cli_cmd_build;
extern const struct cli_command cli_cmd_mount;
extern const struct cli_command cli_cmd_umount;
extern const struct cli_command cli_cmd_inspect;
extern const struct cli_command cli_cmd_verify;

/* Names the running command in error messages; NULL for top-level errors. */
void cli_set_command(const char *name);

/* "cairn: CMD: message\n" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Reports a usage error with a pointer to the help; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Reports what getopt_long() complained about (it runs with opterr = 0 and
 * a leading ':' in the option string); returns CLI_EXIT_USAGE.
 */
int cli_getopt_error(int c, char **argv);

/*
 * Parses a byte size: decimal digits with an optional binary suffix
 * K, M, G, T (case-insensitive, optionally followed by "iB" or "B").
 * -EINVAL when malformed, -ERANGE when it overflows or exceeds max.
 */
int cli_parse_size(const char *s, uint64_t max, uint64_t *ret_size);

/* Parses a plain decimal integer in [min, max]; -EINVAL or -ERANGE. */
int cli_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret_value);

/* Parses a volume reference, reporting a malformed one. */
int cli_parse_ref(const char *s, struct cairn_ref *ret_ref);

/* Opens the store, reporting failure with the URL and reason. */
int cli_open_store(const char *url, bool create, struct cairn_store **ret_store);

/* Opens a volume by reference (no chunk cache), reporting failure. */
int cli_open_volume(struct cairn_store *store, const struct cairn_ref *ref,
                    struct cairn_volume **ret_volume);

/* "1.0 GiB", "512 B": a size for humans. */
void cli_format_size(uint64_t bytes, char *buf, size_t len);

/*
 * A copy of s with control characters and backslashes escaped (\xNN, \\),
 * so that a hostile file name cannot forge extra lines in our output.
 * Caller frees; -ENOMEM.
 */
int cli_escape(const char *s, char **ret_escaped);

/* Online CPUs, at least 1. */
unsigned cli_cpu_count(void);

/* Absolute form of path (relative ones are taken from the cwd); caller frees. */
int cli_absolute_path(const char *path, char **ret_path);
