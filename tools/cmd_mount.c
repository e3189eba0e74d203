/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `cairn mount` and `cairn umount`.
 *
 * Mounting is cairnfs's job; this front only checks the arguments, spells
 * them the way mount(8) and fstab would ("STORE#REF MOUNTPOINT -o ..."), and
 * runs the cairnfs that was installed next to this binary.  Store flags
 * and cache limits become cairnfs -o options; credentials never do: they
 * stay in the environment, which cairnfs inherits.  cairnfs forks
 * into the background only once the mount is live, so its exit status is
 * the answer to "is it mounted" and becomes ours.  With --foreground the
 * process is replaced by cairnfs, so that signals and the terminal reach
 * the daemon directly.
 *
 * Unmounting uses umount2() when we are allowed to and fusermount3 (the
 * setuid helper) otherwise, like every FUSE filesystem.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cairn/cache.h"
#include "cairn/ref.h"

#include "cli_util.h"

extern char **environ;

enum {
        OPT_CACHE_SIZE = 0x100,
        OPT_CACHE_MIN_FREE,
        OPT_PREFETCH,
        OPT_PREFETCH_PROFILE,
        OPT_PREFETCH_RATE,
        OPT_RECORD_PROFILE,
};

/* The free-space floor the chunk cache accepts (include/cairn/cache.h). */
#define CACHE_MIN_FREE_MAX 90u

static void mount_help(FILE *out)
{
        fputs("Usage: cairn mount --store STORE REF MOUNTPOINT [OPTIONS]\n"
              "\n"
              "Mounts the volume REF read-only at MOUNTPOINT by running cairnfs.  Only\n"
              "the manifest is read at mount time; file data is fetched on first read,\n"
              "verified, and kept in the chunk cache.  Returns once the mount is ready;\n"
              "cairnfs then keeps running in the background.\n"
              "\n"
              "Options:\n"
              "  -s, --store STORE          Store holding the volume\n"
              "  -c, --cache-dir DIR        Chunk cache (default: /var/cache/cairn for root,\n"
              "                             $XDG_CACHE_HOME/cairn otherwise)\n"
              "      --cache-size SIZE      Most the chunk cache may hold, shared by every\n"
              "                             user of DIR (default: no limit)\n"
              "      --cache-min-free PCT   Keep PCT% of the cache's filesystem free,\n"
              "                             1..90 (default 10)\n"
              "  -m, --memory-limit SIZE    Resident memory of the daemon (default 128M)\n"
              "      --prefetch MODE        auto: replay the volume's stored access\n"
              "                             profile (default); all: fetch the whole\n"
              "                             volume into the cache in the background;\n"
              "                             none\n"
              "      --prefetch-rate SIZE   Bytes per second for --prefetch=all\n"
              "                             (default 256M)\n"
              "      --prefetch-profile FILE  Replay a recorded access profile\n"
              "      --record-profile FILE  Record the order chunks are first read in\n"
              "                             (for cairn build/warm --profile)\n"
              "  -o OPTS                    More comma-separated cairnfs/FUSE mount options\n"
              "  -f, --foreground           Run cairnfs in the foreground (Ctrl-C unmounts)\n"
              "  -h, --help                 Show this help\n"
              "\n"
              "SIZE takes a K, M, G or T suffix (powers of 1024).\n"
              "\n",
              out);
        cli_store_help(out);
        fputs("\n"
              "The same mount without this command:\n"
              "  cairnfs 'STORE#REF' MOUNTPOINT -o cache_dir=DIR[,OPTION...]\n"
              "  mount -t fuse.cairnfs 'STORE#REF' MOUNTPOINT -o ro,cache_dir=DIR\n"
              "Each option above has a cairnfs -o form (cairnfs --help); cairnfs gets\n"
              "this process's environment, so the AWS variables reach it too.\n"
              "\n"
              "Exit status: 0 mounted, 1 failure, 2 usage error.\n",
              out);
}

static void umount_help(FILE *out)
{
        fputs("Usage: cairn umount MOUNTPOINT [OPTIONS]\n"
              "\n"
              "Unmounts a cairn volume: umount2() as root, fusermount3 -u otherwise.\n"
              "\n"
              "Options:\n"
              "  -l, --lazy   Detach now, finish when the last file is closed\n"
              "  -h, --help   Show this help\n"
              "\n"
              "Exit status: 0 unmounted, 1 failure, 2 usage error.\n",
              out);
}

/*
 * Appends key and value (either may be "") to the comma-separated option
 * list in *opts.  When escape is set, ',' and '\' in value are escaped
 * with a backslash so that libfuse's option parser reads it back as one
 * option: a cache path may contain a comma.
 */
static int opts_append(char **opts, const char *key, const char *value, bool escape)
{
        size_t old = *opts ? strlen(*opts) : 0, k = strlen(key), n = strlen(value);
        char *s, *p;

        if (n > (SIZE_MAX - old - k - 2) / 2)
                return -ENOMEM;
        s = realloc(*opts, old + 1 + k + 2 * n + 1);
        if (!s)
                return -ENOMEM;
        p = s + old;
        if (old > 0)
                *p++ = ',';
        memcpy(p, key, k);
        p += k;
        for (; *value; value++) {
                if (escape && (*value == ',' || *value == '\\'))
                        *p++ = '\\';
                *p++ = *value;
        }
        *p = '\0';
        *opts = s;
        return 0;
}

/* What `cairn mount` hands to cairnfs as -o options. */
struct mount_settings {
        const char *cache_dir;   /* absolute */
        uint64_t memory_limit;   /* 0: cairnfs's default */
        uint64_t cache_size;     /* 0: no limit */
        unsigned cache_min_free; /* 0: cairnfs's default */
        const struct cli_store_args *store;
        const char *ca_file; /* absolute; NULL: none */
        const char *extra;   /* the user's -o, verbatim */
        const char *prefetch;          /* auto, all, none; NULL: default */
        uint64_t prefetch_rate;        /* 0: default */
        const char *prefetch_profile;  /* absolute */
        const char *record_profile;    /* absolute */
};

static int opts_append_u64(char **opts, const char *key, uint64_t value)
{
        char num[32];

        snprintf(num, sizeof(num), "%llu", (unsigned long long)value);
        return opts_append(opts, key, num, false);
}

/*
 * The -o string for cairnfs: our options first, the user's -o last (so
 * that theirs win).  Store settings only: credentials reach cairnfs through
 * the environment it inherits, never through its argv.
 */
static int mount_opts(const struct mount_settings *m, char **ret_opts)
{
        const struct cairn_store_options *so = &m->store->opts;
        char *opts = NULL;
        int r;

        r = opts_append(&opts, "cache_dir=", m->cache_dir, true);
        if (r >= 0 && m->memory_limit > 0)
                r = opts_append_u64(&opts, "memory_limit=", m->memory_limit);
        if (r >= 0 && m->cache_size > 0)
                r = opts_append_u64(&opts, "cache_size=", m->cache_size);
        if (r >= 0 && m->cache_min_free > 0)
                r = opts_append_u64(&opts, "cache_min_free=", m->cache_min_free);
        if (r >= 0 && so->endpoint)
                r = opts_append(&opts, "endpoint=", so->endpoint, true);
        if (r >= 0 && so->region)
                r = opts_append(&opts, "region=", so->region, true);
        if (r >= 0 && so->profile)
                r = opts_append(&opts, "aws_profile=", so->profile, true);
        if (r >= 0 && so->addressing == CAIRN_S3_ADDRESSING_PATH)
                r = opts_append(&opts, "addressing=path", "", false);
        if (r >= 0 && so->addressing == CAIRN_S3_ADDRESSING_VIRTUAL)
                r = opts_append(&opts, "addressing=virtual", "", false);
        if (r >= 0 && so->anonymous)
                r = opts_append(&opts, "anonymous", "", false);
        if (r >= 0 && m->ca_file)
                r = opts_append(&opts, "ca_file=", m->ca_file, true);
        if (r >= 0 && so->insecure)
                r = opts_append(&opts, "insecure", "", false);
        if (r >= 0 && so->max_connections > 0)
                r = opts_append_u64(&opts, "connections=", so->max_connections);
        if (r >= 0 && so->deadline_ms > 0)
                r = opts_append_u64(&opts, "deadline=", so->deadline_ms / 1000);
        if (r >= 0 && m->prefetch)
                r = opts_append(&opts, "prefetch=", m->prefetch, true);
        if (r >= 0 && m->prefetch_rate)
                r = opts_append_u64(&opts, "prefetch_rate=", m->prefetch_rate);
        if (r >= 0 && m->prefetch_profile)
                r = opts_append(&opts, "prefetch_profile=", m->prefetch_profile, true);
        if (r >= 0 && m->record_profile)
                r = opts_append(&opts, "record_profile=", m->record_profile, true);
        if (r >= 0 && m->extra)
                r = opts_append(&opts, "", m->extra, false);
        if (r < 0) {
                free(opts);
                return r;
        }
        *ret_opts = opts;
        return 0;
}

/*
 * The cairnfs installed with this binary, so that a build tree or a
 * non-default prefix runs its own daemon; else whatever PATH finds.
 */
static char *find_cairnfs(bool *ret_search_path)
{
        char self[PATH_MAX], *path;
        ssize_t n;

        n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
                self[n] = '\0';
                if (asprintf(&path, "%s/cairnfs", dirname(self)) >= 0) {
                        if (access(path, X_OK) == 0) {
                                *ret_search_path = false;
                                return path;
                        }
                        free(path);
                }
        }
        *ret_search_path = true;
        return strdup("cairnfs");
}

/* A plain store path must not depend on the cwd: cairnfs chdirs to / when daemonizing. */
static int absolute_store(const char *url, char **ret_url)
{
        char *u;

        if (strstr(url, "://")) {
                u = strdup(url);
                if (!u)
                        return -ENOMEM;
                *ret_url = u;
                return 0;
        }
        return cli_absolute_path(url, ret_url);
}

/* Runs argv to completion; returns its wait status or -errno if it could not start. */
static int spawn_wait(const char *path, bool search_path, char *const argv[], int *ret_status)
{
        pid_t pid;
        int r, status;

        if (search_path)
                r = posix_spawnp(&pid, path, NULL, NULL, argv, environ);
        else
                r = posix_spawn(&pid, path, NULL, NULL, argv, environ);
        if (r != 0)
                return -r;
        while (waitpid(pid, &status, 0) < 0) {
                if (errno != EINTR)
                        return -errno;
        }
        *ret_status = status;
        return 0;
}

static int mount_run(int argc, char **argv)
{
        static const struct option options[] = {
            {"store", required_argument, NULL, 's'},
            {"cache-dir", required_argument, NULL, 'c'},
            {"memory-limit", required_argument, NULL, 'm'},
            {"cache-size", required_argument, NULL, OPT_CACHE_SIZE},
            {"cache-min-free", required_argument, NULL, OPT_CACHE_MIN_FREE},
            {"prefetch", required_argument, NULL, OPT_PREFETCH},
            {"prefetch-rate", required_argument, NULL, OPT_PREFETCH_RATE},
            {"prefetch-profile", required_argument, NULL, OPT_PREFETCH_PROFILE},
            {"record-profile", required_argument, NULL, OPT_RECORD_PROFILE},
            {"foreground", no_argument, NULL, 'f'},
            {"help", no_argument, NULL, 'h'},
            CLI_STORE_LONG_OPTIONS,
            {},
        };
        const char *store_url = NULL, *cache_arg = NULL, *ref_arg, *mp_arg;
        char *extra_opts = NULL, *opts = NULL, *store = NULL, *source = NULL;
        char *cache_dir = NULL, *mountpoint = NULL, *cairnfs = NULL, *ca_file = NULL;
        char *prefetch_profile = NULL, *record_profile = NULL;
        char default_cache[PATH_MAX];
        bool foreground = false, search_path;
        struct mount_settings settings = {0};
        struct cli_store_args store_args;
        uint64_t v;
        struct cairn_ref ref;
        struct stat st;
        char *args[8];
        int c, r, n = 0, status, ret = CLI_EXIT_FAILURE;

        cli_store_args_init(&store_args);
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":s:c:m:o:fh", options, NULL)) != -1) {
                switch (c) {
                case 's':
                        store_url = optarg;
                        break;
                case 'c':
                        cache_arg = optarg;
                        break;
                case 'm':
                        if (cli_parse_size(optarg, SIZE_MAX, &settings.memory_limit) < 0 ||
                            settings.memory_limit == 0) {
                                ret = cli_usage_error("invalid --memory-limit '%s': expected a "
                                                      "size like 512M",
                                                      optarg);
                                goto out;
                        }
                        break;
                case OPT_CACHE_SIZE:
                        if (cli_parse_size(optarg, UINT64_MAX, &settings.cache_size) < 0 ||
                            settings.cache_size == 0) {
                                ret = cli_usage_error("invalid --cache-size '%s': expected a "
                                                      "size like 10G",
                                                      optarg);
                                goto out;
                        }
                        break;
                case OPT_CACHE_MIN_FREE:
                        if (cli_parse_uint(optarg, 1, CACHE_MIN_FREE_MAX, &v) < 0) {
                                ret = cli_usage_error("invalid --cache-min-free '%s': expected "
                                                      "a percentage, 1..%u",
                                                      optarg, CACHE_MIN_FREE_MAX);
                                goto out;
                        }
                        settings.cache_min_free = (unsigned)v;
                        break;
                case OPT_PREFETCH:
                        if (strcmp(optarg, "auto") && strcmp(optarg, "all") &&
                            strcmp(optarg, "none")) {
                                ret = cli_usage_error("invalid --prefetch '%s': expected auto, "
                                                      "all or none",
                                                      optarg);
                                goto out;
                        }
                        settings.prefetch = optarg;
                        break;
                case OPT_PREFETCH_RATE:
                        if (cli_parse_size(optarg, UINT64_MAX, &settings.prefetch_rate) < 0 ||
                            settings.prefetch_rate == 0) {
                                ret = cli_usage_error("invalid --prefetch-rate '%s': expected "
                                                      "bytes per second like 200M",
                                                      optarg);
                                goto out;
                        }
                        break;
                case OPT_PREFETCH_PROFILE:
                        free(prefetch_profile);
                        prefetch_profile = NULL;
                        if (access(optarg, R_OK) < 0) {
                                ret = cli_usage_error("cannot read --prefetch-profile '%s': %s",
                                                      optarg, strerror(errno));
                                goto out;
                        }
                        if (cli_absolute_path(optarg, &prefetch_profile) < 0) {
                                cli_error("out of memory");
                                goto out;
                        }
                        break;
                case OPT_RECORD_PROFILE:
                        free(record_profile);
                        record_profile = NULL;
                        if (cli_absolute_path(optarg, &record_profile) < 0) {
                                cli_error("out of memory");
                                goto out;
                        }
                        break;
                case 'o':
                        if (optarg[0] == '\0')
                                break;
                        if (opts_append(&extra_opts, "", optarg, false) < 0) {
                                cli_error("out of memory");
                                goto out;
                        }
                        break;
                case 'f':
                        foreground = true;
                        break;
                case 'h':
                        mount_help(stdout);
                        ret = CLI_EXIT_OK;
                        goto out;
                default:
                        r = cli_store_option_or_fail(&store_args, c, optarg, argv);
                        if (r) {
                                ret = r;
                                goto out;
                        }
                        break;
                }
        }
        if (argc - optind < 2) {
                ret = cli_usage_error(optind < argc ? "missing MOUNTPOINT" : "missing REF");
                goto out;
        }
        if (argc - optind > 2) {
                ret = cli_usage_error("unexpected argument '%s'", argv[optind + 2]);
                goto out;
        }
        ref_arg = argv[optind];
        mp_arg = argv[optind + 1];
        if (!store_url) {
                ret = cli_usage_error("missing --store STORE");
                goto out;
        }
        if (cli_parse_ref(ref_arg, &ref) < 0) {
                ret = CLI_EXIT_USAGE;
                goto out;
        }
        if (cli_store_check(store_url, &store_args) < 0) {
                ret = CLI_EXIT_USAGE;
                goto out;
        }
        if (stat(mp_arg, &st) < 0) {
                cli_error("cannot use mount point '%s': %s", mp_arg, strerror(errno));
                goto out;
        }
        if (!S_ISDIR(st.st_mode)) {
                cli_error("mount point '%s' is not a directory", mp_arg);
                goto out;
        }
        mountpoint = realpath(mp_arg, NULL);
        if (!mountpoint) {
                cli_error("cannot use mount point '%s': %s", mp_arg, strerror(errno));
                goto out;
        }

        if (!cache_arg) {
                r = cairn_cache_default_dir(default_cache, sizeof(default_cache));
                if (r < 0) {
                        cli_error("cannot find a cache directory (use --cache-dir): %s",
                                  strerror(-r));
                        goto out;
                }
                cache_arg = default_cache;
        }
        if (cli_absolute_path(cache_arg, &cache_dir) < 0 || absolute_store(store_url, &store) < 0 ||
            asprintf(&source, "%s#%s", store, ref_arg) < 0) {
                source = NULL;
                cli_error("out of memory");
                goto out;
        }

        /* cairnfs runs from "/" once it detaches: a relative CA path would then miss. */
        if (store_args.opts.ca_file && cli_absolute_path(store_args.opts.ca_file, &ca_file) < 0) {
                cli_error("out of memory");
                goto out;
        }
        settings.cache_dir = cache_dir;
        settings.store = &store_args;
        settings.ca_file = ca_file;
        settings.extra = extra_opts;
        settings.prefetch_profile = prefetch_profile;
        settings.record_profile = record_profile;
        if (mount_opts(&settings, &opts) < 0) {
                cli_error("out of memory");
                goto out;
        }

        cairnfs = find_cairnfs(&search_path);
        if (!cairnfs) {
                cli_error("out of memory");
                goto out;
        }
        args[n++] = "cairnfs";
        args[n++] = source;
        args[n++] = mountpoint;
        args[n++] = "-o";
        args[n++] = opts;
        if (foreground)
                args[n++] = "-f";
        args[n] = NULL;

        if (foreground) {
                fflush(stdout);
                fflush(stderr);
                if (search_path)
                        execvp(cairnfs, args);
                else
                        execv(cairnfs, args);
                if (errno == ENOENT && search_path)
                        cli_error("cannot find 'cairnfs' next to this program or in PATH");
                else
                        cli_error("cannot run '%s': %s", cairnfs, strerror(errno));
                goto out;
        }

        r = spawn_wait(cairnfs, search_path, args, &status);
        if (r == -ENOENT && search_path) {
                cli_error("cannot find 'cairnfs' next to this program or in PATH");
                goto out;
        }
        if (r < 0) {
                cli_error("cannot run '%s': %s", cairnfs, strerror(-r));
                goto out;
        }
        if (WIFSIGNALED(status)) {
                cli_error("cairnfs was killed by signal %d (%s)", WTERMSIG(status),
                          strsignal(WTERMSIG(status)));
                goto out;
        }
        /* cairnfs has already said why on stderr; keep our documented exit codes. */
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                ret = CLI_EXIT_OK;
        else if (WIFEXITED(status) && WEXITSTATUS(status) == CLI_EXIT_USAGE)
                ret = CLI_EXIT_USAGE;
out:
        free(extra_opts);
        free(opts);
        free(store);
        free(source);
        free(cache_dir);
        free(ca_file);
        free(prefetch_profile);
        free(record_profile);
        free(mountpoint);
        free(cairnfs);
        return ret;
}

static int umount_run(int argc, char **argv)
{
        static const struct option options[] = {
            {"lazy", no_argument, NULL, 'l'},
            {"help", no_argument, NULL, 'h'},
            {},
        };
        char *args[5];
        bool lazy = false;
        const char *mp;
        int c, r, n = 0, status;

        opterr = 0;
        while ((c = getopt_long(argc, argv, ":lh", options, NULL)) != -1) {
                switch (c) {
                case 'l':
                        lazy = true;
                        break;
                case 'h':
                        umount_help(stdout);
                        return CLI_EXIT_OK;
                default:
                        return cli_getopt_error(c, argv);
                }
        }
        if (optind >= argc)
                return cli_usage_error("missing MOUNTPOINT");
        if (argc - optind > 1)
                return cli_usage_error("unexpected argument '%s'", argv[optind + 1]);
        mp = argv[optind];

        if (geteuid() == 0) {
                if (umount2(mp, lazy ? MNT_DETACH : 0) == 0)
                        return CLI_EXIT_OK;
                r = errno;
                switch (r) {
                case EBUSY:
                        cli_error("'%s' is busy: close the files using it, or detach it with "
                                  "'cairn umount --lazy' (umount -l)",
                                  mp);
                        return CLI_EXIT_FAILURE;
                case EINVAL:
                        cli_error("'%s' is not a mount point", mp);
                        return CLI_EXIT_FAILURE;
                case EPERM:
                        /* e.g. root in a user namespace: the setuid helper may still work. */
                        break;
                default:
                        cli_error("cannot unmount '%s': %s", mp, strerror(r));
                        return CLI_EXIT_FAILURE;
                }
        }

        args[n++] = "fusermount3";
        args[n++] = "-u";
        if (lazy)
                args[n++] = "-z";
        args[n++] = (char *)mp;
        args[n] = NULL;
        fflush(stdout);
        r = spawn_wait("fusermount3", true, args, &status);
        if (r < 0) {
                cli_error("cannot run 'fusermount3': %s", strerror(-r));
                return CLI_EXIT_FAILURE;
        }
        /* fusermount3 has printed its reason. */
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                return CLI_EXIT_OK;
        return CLI_EXIT_FAILURE;
}

const struct cli_command cli_cmd_mount = {
    .name = "mount",
    .summary = "Mount a volume read-only (runs cairnfs)",
    .run = mount_run,
    .help = mount_help,
};

const struct cli_command cli_cmd_umount = {
    .name = "umount",
    .summary = "Unmount a mounted volume",
    .run = umount_run,
    .help = umount_help,
};
