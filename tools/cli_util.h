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

#include "cairn/store.h"

struct cairn_ref;
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
extern const struct cli_command cli_cmd_cache;
extern const struct cli_command cli_cmd_warm;

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

/*
 * The store flags, shared by every command that opens a store (directly or
 * through cairnfs).  A command appends CLI_STORE_LONG_OPTIONS to its
 * getopt_long() table, hands every option it does not know itself to
 * cli_store_parse_option(), prints cli_store_help() in its --help and opens
 * the store with cli_open_store().  Credentials are never flags: they come
 * from the environment and the AWS shared files, so that no secret appears
 * in argv (ours, or cairnfs's when `cairn mount` runs it).
 */
enum {
        CLI_OPT_ENDPOINT = 0x1000, /* above every command's own option values */
        CLI_OPT_REGION,
        CLI_OPT_PROFILE,
        CLI_OPT_PATH_STYLE,
        CLI_OPT_VIRTUAL_HOSTED,
        CLI_OPT_ANONYMOUS,
        CLI_OPT_CA_FILE,
        CLI_OPT_INSECURE,
        CLI_OPT_CONNECTIONS,
        CLI_OPT_DEADLINE,
};

/* clang-format off */
#define CLI_STORE_LONG_OPTIONS                                                  \
        {"endpoint", required_argument, NULL, CLI_OPT_ENDPOINT},                \
        {"region", required_argument, NULL, CLI_OPT_REGION},                    \
        {"aws-profile", required_argument, NULL, CLI_OPT_PROFILE},              \
        {"path-style", no_argument, NULL, CLI_OPT_PATH_STYLE},                  \
        {"virtual-hosted", no_argument, NULL, CLI_OPT_VIRTUAL_HOSTED},          \
        {"anonymous", no_argument, NULL, CLI_OPT_ANONYMOUS},                    \
        {"ca-file", required_argument, NULL, CLI_OPT_CA_FILE},                  \
        {"insecure", no_argument, NULL, CLI_OPT_INSECURE},                      \
        {"connections", required_argument, NULL, CLI_OPT_CONNECTIONS},          \
        {"deadline", required_argument, NULL, CLI_OPT_DEADLINE}
/* clang-format on */

/* Limits of the numeric store flags (and of cairnfs's matching -o options). */
#define CLI_CONNECTIONS_MAX 256u
#define CLI_DEADLINE_MAX_S  3600u

struct cli_store_args {
        /* Strings point into argv.  deadline_ms is also the volume's read deadline. */
        struct cairn_store_options opts;
        /* Which of the flags that only some stores understand were given, for errors. */
        const char *s3_flag;     /* e.g. "--endpoint": only s3:// stores */
        const char *remote_flag; /* e.g. "--ca-file": only http(s):// and s3:// stores */
};

void cli_store_args_init(struct cli_store_args *args);

/*
 * Handles option c (a getopt_long() result) if it is a store flag.
 * Returns 1 when handled, 0 when c is not a store flag, and -EINVAL for a
 * bad value, already reported as a usage error (exit with CLI_EXIT_USAGE).
 */
int cli_store_parse_option(struct cli_store_args *args, int c, const char *arg);

/*
 * For a command's getopt_long() default case: handles option c if it is a
 * store flag (returns 0), else reports the bad or unknown option and
 * returns the exit code to leave with.
 */
int cli_store_option_or_fail(struct cli_store_args *args, int c, const char *arg, char **argv);

/* The "Store options" section of a command's --help. */
void cli_store_help(FILE *out);

/*
 * Checks that the flags given suit the store at url (an --endpoint for a
 * local store is a mistake, not something to ignore); reports a usage
 * error and returns -EINVAL otherwise.
 */
int cli_store_check(const char *url, const struct cli_store_args *args);

/*
 * Opens the store with the flags (NULL: defaults), reporting failure with
 * the URL and the store's reason.  Warns on stderr when TLS verification
 * is off.
 */
int cli_open_store(const char *url, const struct cli_store_args *args, bool create,
                   struct cairn_store **ret_store);

/*
 * Opens a volume by reference (no chunk cache), reporting failure.  args
 * (may be NULL) gives the read deadline.
 */
int cli_open_volume(struct cairn_store *store, const struct cairn_ref *ref,
                    const struct cli_store_args *args, struct cairn_volume **ret_volume);

/* "1.0 GiB", "512 B": a size for humans. */
void cli_format_size(uint64_t bytes, char *buf, size_t len);
/* "1.0 GiB (1073741824 bytes)", "512 B": the same with the exact count; returns buf. */
const char *cli_format_size_exact(uint64_t bytes, char *buf, size_t len);

/*
 * A copy of s with control characters and backslashes escaped (\xNN, \\),
 * so that a hostile file name cannot forge extra lines in our output.
 * Caller frees; -ENOMEM.
 */
int cli_escape(const char *s, char **ret_escaped);

/* s as a JSON string literal (quoted, escaped) on stdout. */
void cli_json_string(const char *s);

/* Online CPUs, at least 1. */
unsigned cli_cpu_count(void);

/* Absolute form of path (relative ones are taken from the cwd); caller frees. */
int cli_absolute_path(const char *path, char **ret_path);
