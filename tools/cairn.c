/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `cairn`: the command-line front of libcairn.  This file only dispatches:
 * global options, `help`, `--version`, and the table of commands, each of
 * which lives in its own tools/cmd_<name>.c and parses its own options.
 *
 * Output contract: results on stdout, everything else (errors, progress,
 * summaries) on stderr, so that `digest=$(cairn build ...)` works.  Exit
 * codes are 0 success, 1 failure, 2 usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cairn/log.h"

#include "cli_util.h"

#ifndef CAIRN_VERSION
#define CAIRN_VERSION "0.1.0"
#endif

static const struct cli_command *const commands[] = {
    &cli_cmd_build,   &cli_cmd_mount,  &cli_cmd_umount,
    &cli_cmd_inspect, &cli_cmd_verify, &cli_cmd_cache, &cli_cmd_warm,
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct cli_command *find_command(const char *name)
{
        for (size_t i = 0; i < N_COMMANDS; i++)
                if (strcmp(commands[i]->name, name) == 0)
                        return commands[i];
        return NULL;
}

static void main_help(FILE *out)
{
        fputs("Usage: cairn [OPTIONS] COMMAND [ARGS...]\n"
              "\n"
              "Lazy-loading, content-addressed volumes for ML model weights and datasets.\n"
              "\n"
              "Commands:\n",
              out);
        for (size_t i = 0; i < N_COMMANDS; i++)
                fprintf(out, "  %-9s %s\n", commands[i]->name, commands[i]->summary);
        fputs("  help      Show the help of a command\n"
              "\n"
              "Options:\n"
              "  -v, --verbose   Log debug messages of the library on stderr\n"
              "  -h, --help      Show this help and exit\n"
              "  -V, --version   Show the version and exit\n"
              "\n"
              "A STORE is a directory (a plain path or file:///abs/path), an HTTP(S)\n"
              "server serving one (http://HOST/PATH, https://..., read-only), or an S3\n"
              "bucket (s3://BUCKET/PREFIX).\n"
              "A REF is NAME:TAG (looked up in the store) or NAME@sha256:<64 hex>.\n"
              "\n"
              "Exit status:\n"
              "  0  success\n"
              "  1  failure (the reason is printed on stderr)\n"
              "  2  usage error (bad option or argument)\n"
              "\n"
              "Run 'cairn help COMMAND' or 'cairn COMMAND --help' for details.\n",
              out);
}

static int run_help(int argc, char **argv)
{
        const struct cli_command *cmd;

        if (argc < 2) {
                main_help(stdout);
                return CLI_EXIT_OK;
        }
        if (argc > 2)
                return cli_usage_error("'help' takes at most one command");
        cmd = find_command(argv[1]);
        if (!cmd)
                return cli_usage_error("unknown command '%s'", argv[1]);
        cmd->help(stdout);
        return CLI_EXIT_OK;
}

static int run(int argc, char **argv)
{
        static const struct option options[] = {
            {"help", no_argument, NULL, 'h'},
            {"version", no_argument, NULL, 'V'},
            {"verbose", no_argument, NULL, 'v'},
            {},
        };
        static char log_program[64];
        const struct cli_command *cmd;
        int c;

        /* '+': stop at the command name; its options belong to the command. */
        opterr = 0;
        while ((c = getopt_long(argc, argv, "+:hVv", options, NULL)) != -1) {
                switch (c) {
                case 'h':
                        main_help(stdout);
                        return CLI_EXIT_OK;
                case 'V':
                        printf("cairn %s\n", CAIRN_VERSION);
                        return CLI_EXIT_OK;
                case 'v':
                        cairn_log_set_level(LOG_DEBUG);
                        break;
                default:
                        return cli_getopt_error(c, argv);
                }
        }
        if (optind >= argc)
                return cli_usage_error("missing COMMAND");

        argc -= optind;
        argv += optind;
        if (strcmp(argv[0], "help") == 0)
                return run_help(argc, argv);
        cmd = find_command(argv[0]);
        if (!cmd)
                return cli_usage_error("unknown command '%s'", argv[0]);

        cli_set_command(cmd->name);
        /* Library warnings (e.g. skipped special files) then read like our own errors. */
        snprintf(log_program, sizeof(log_program), "cairn: %s", cmd->name);
        cairn_log_set_program(log_program);
        /* Let the command's getopt_long() start afresh on its own argv. */
        optind = 0;
        return cmd->run(argc, argv);
}

int main(int argc, char **argv)
{
        int ret;

        cairn_log_set_program("cairn");
        ret = run(argc, argv);

        /* A result nobody received (full disk, closed pipe) is a failure. */
        if (fflush(stdout) != 0 || ferror(stdout)) {
                cli_error("cannot write to stdout: %s", strerror(errno ? errno : EIO));
                if (ret == CLI_EXIT_OK)
                        ret = CLI_EXIT_FAILURE;
        }
        return ret;
}
