/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cairnfs: mounts one cairn volume read-only through FUSE.
 *
 *   cairnfs STORE#REF MOUNTPOINT [-o OPTIONS] [-f] [-d]
 *
 * The source is one string so that mount(8) and /etc/fstab can name a
 * volume: `mount -t fuse.cairnfs 'STORE#REF' MP -o ro` runs mount.fuse3,
 * which runs `cairnfs 'STORE#REF' MP -o ro,...`.  It is split at its last
 * '#' (a ref never contains one; a store URL might).
 *
 * Everything that can fail for a reason the user can fix (options, store,
 * ref, manifest) is checked before mounting, and the parent process exits
 * only once the mount exists, so that `cairnfs ... && ls MP` is safe and a
 * failure is one line on stderr and exit status 1.  The request handlers
 * live in fuse_ops.c.
 *
 * The daemon forks before it opens the store, not after mounting as
 * fuse_daemonize() would: opening a remote store starts the fetch engine's
 * thread, and a thread does not survive fork().  The parent waits on a pipe
 * for the daemon's verdict and exits with it.
 */
#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <fuse_opt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "cairn/cache.h"
#include "cairn/log.h"
#include "cairn/mountinfo.h"
#include "cairn/parse.h"
#include "cairn/profile.h"
#include "cairn/ref.h"
#include "cairn/store.h"
#include "cairn/volume.h"
#include "cairnfs.h"

#ifndef CAIRN_VERSION
#define CAIRN_VERSION "0.1.0"
#endif

/* Exit statuses (documented in --help and docs/MOUNTING.md). */
#define EXIT_MOUNT_FAILED 1
#define EXIT_USAGE 2

/*
 * FUSE worker threads.  Reads that must fetch are handed to the volume's
 * reader pool, so workers do not wait on the network; the cap bounds the
 * requests being decoded at once.  -o max_threads= / max_idle_threads=
 * override these.
 */
#define CAIRNFS_MAX_THREADS 32u
#define CAIRNFS_MAX_IDLE_THREADS 8u

/* Limits of the numeric options, the same as the `cairn` flags they mirror. */
#define CONNECTIONS_MAX    256u
#define DEADLINE_MAX_S     3600u
#define CACHE_MIN_FREE_MAX 90u

/*
 * The command line, parsed once; validated in main().  Values stay
 * unparsed strings until then; a repeated option replaces the earlier one.
 */
struct cairnfs_config {
        char *source;         /* "STORE#REF" */
        char *cache_dir;      /* -o cache_dir= */
        char *memory_limit;   /* -o memory_limit= */
        char *cache_size;     /* -o cache_size= */
        char *cache_min_free; /* -o cache_min_free= */
        /* Store settings; credentials are never options (see --help). */
        char *endpoint;
        char *region;
        char *aws_profile;
        char *addressing; /* path, virtual or auto */
        char *ca_file;
        char *connections;
        char *deadline; /* seconds */
        char *prefetch;         /* auto, all or none */
        char *prefetch_profile; /* replay this profile file */
        char *prefetch_rate;    /* bytes per second for prefetch=all */
        char *record_profile;   /* record the first-read order here */
        bool anonymous;
        bool insecure;
        bool show_help;
        bool show_version;
};

enum {
        KEY_HELP,
        KEY_VERSION,
        KEY_RW,
        KEY_DISCARD,
        KEY_ANONYMOUS,
        KEY_INSECURE,
        /* "name=value" options: this plus the offset of their field in the config. */
        KEY_VALUE_BASE = 0x10000,
};

/*
 * A "name=value" option stored in the string field of the same name, by
 * key rather than with a "%s" template so that a repeated option frees the
 * value it replaces.
 */
#define VALUE_OPT(name)                                                                            \
        FUSE_OPT_KEY(#name "=", KEY_VALUE_BASE + (int)offsetof(struct cairnfs_config, name))

static const struct fuse_opt cairnfs_opts[] = {
        VALUE_OPT(cache_dir),
        VALUE_OPT(memory_limit),
        VALUE_OPT(cache_size),
        VALUE_OPT(cache_min_free),
        VALUE_OPT(endpoint),
        VALUE_OPT(region),
        VALUE_OPT(aws_profile),
        VALUE_OPT(addressing),
        VALUE_OPT(ca_file),
        VALUE_OPT(connections),
        VALUE_OPT(deadline),
        VALUE_OPT(prefetch),
        VALUE_OPT(prefetch_profile),
        VALUE_OPT(prefetch_rate),
        VALUE_OPT(record_profile),
        FUSE_OPT_KEY("anonymous", KEY_ANONYMOUS),
        FUSE_OPT_KEY("insecure", KEY_INSECURE),
        FUSE_OPT_KEY("-h", KEY_HELP),
        FUSE_OPT_KEY("--help", KEY_HELP),
        FUSE_OPT_KEY("-V", KEY_VERSION),
        FUSE_OPT_KEY("--version", KEY_VERSION),
        FUSE_OPT_KEY("rw", KEY_RW),
        /*
         * fstab-only options.  mount(8) and mount.fuse3 strip most of them
         * before we run, but not every mount helper does; none means
         * anything to a FUSE mount and libfuse would reject them.
         */
        FUSE_OPT_KEY("defaults", KEY_DISCARD),
        FUSE_OPT_KEY("auto", KEY_DISCARD),
        FUSE_OPT_KEY("noauto", KEY_DISCARD),
        FUSE_OPT_KEY("user", KEY_DISCARD),
        FUSE_OPT_KEY("nouser", KEY_DISCARD),
        FUSE_OPT_KEY("users", KEY_DISCARD),
        FUSE_OPT_KEY("_netdev", KEY_DISCARD),
        FUSE_OPT_KEY("nofail", KEY_DISCARD),
        FUSE_OPT_END,
};

static void usage(FILE *f)
{
        fputs("usage: cairnfs STORE#REF MOUNTPOINT [-o OPTION[,OPTION...]] [-f] [-d]\n"
              "\n"
              "Mounts the cairn volume REF (NAME:TAG or NAME@sha256:HEX) of STORE\n"
              "(a plain path, file:///abs/path, http[s]://HOST/PATH or\n"
              "s3://BUCKET/PREFIX) read-only at MOUNTPOINT.  The source is split at its\n"
              "last '#'.  Returns once the mount is ready; the daemon stays in the\n"
              "background until the volume is unmounted.\n"
              "\n"
              "Options:\n"
              "  -o cache_dir=DIR      chunk cache (default: /var/cache/cairn for root,\n"
              "                        $XDG_CACHE_HOME/cairn otherwise)\n"
              "  -o cache_size=SIZE    most the chunk cache may hold (default: no limit)\n"
              "  -o cache_min_free=PCT keep PCT% of the cache's filesystem free, 1..90\n"
              "                        (default: 10)\n"
              "  -o memory_limit=SIZE  resident memory of the daemon (default: 128M, at least 64M)\n"
              "  -o deadline=SECONDS   a read that takes longer fails with EIO, 1..3600\n"
              "                        (default: 30)\n"
              "  -o prefetch=MODE      auto: replay the volume's stored access profile\n"
              "                        (default); all: fetch the whole volume into the\n"
              "                        cache in the background; none\n"
              "  -o prefetch_rate=SIZE bytes per second for prefetch=all (default 256M)\n"
              "  -o prefetch_profile=FILE  replay this recorded access profile\n"
              "  -o record_profile=FILE    record the order chunks are first read\n"
              "  -o allow_other        let other users use the mount\n"
              "  -o ro                 accepted; the mount is always read-only\n"
              "  -o OPTION             other FUSE and mount(8) options pass through\n"
              "  -f                    stay in the foreground, log to stderr\n"
              "  -d                    debug: log every request (implies -f)\n"
              "  -s                    serve requests on a single thread\n"
              "  -h, --help            show this help\n"
              "  -V, --version         show the version\n"
              "\n"
              "Remote stores (http://, https://, s3://):\n"
              "  -o connections=N      parallel connections per host, 1..256 (default: 8)\n"
              "  -o ca_file=PATH       trust the CA certificates in PATH for https\n"
              "  -o insecure           do not verify TLS certificates (warns; testing only)\n"
              "\n"
              "S3 stores (defaults: the AWS environment variables and shared files):\n"
              "  -o endpoint=URL       S3 endpoint, http[s]://HOST[:PORT]\n"
              "  -o region=REGION      S3 region\n"
              "  -o aws_profile=NAME   profile of the AWS config and credentials files\n"
              "  -o addressing=STYLE   path, virtual (hosted) or auto (default: path for\n"
              "                        custom endpoints, virtual for AWS)\n"
              "  -o anonymous          never sign requests, even with credentials set\n"
              "Credentials are never options: the keys of aws_profile= if given, else\n"
              "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, else the\n"
              "keys of profile AWS_PROFILE (or \"default\") in ~/.aws/credentials.\n"
              "\n"
              "SIZE is bytes or a number with a K, M, G or T suffix (powers of 1024).\n"
              "Always mounted ro,nosuid,nodev,default_permissions; \"-o rw\" is an error.\n"
              "\n"
              "Exit status: 0 mounted (or --help, --version), 1 the volume cannot be\n"
              "opened or mounted, 2 usage error.\n"
              "\n"
              "Also: mount -t fuse.cairnfs 'STORE#REF' MOUNTPOINT -o ro[,OPTIONS]\n",
              f);
}

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
        struct cairnfs_config *cfg = data;

        (void)outargs;
        if (key >= KEY_VALUE_BASE) {
                char **field = (char **)((char *)cfg + (key - KEY_VALUE_BASE));
                char *value = strdup(strchr(arg, '=') + 1);

                if (!value)
                        return -1;
                free(*field);
                *field = value;
                return 0;
        }
        switch (key) {
        case KEY_HELP:
                cfg->show_help = true;
                return 0;
        case KEY_VERSION:
                cfg->show_version = true;
                return 0;
        case KEY_RW:
                cairn_err("option 'rw' is not supported: cairn volumes are read-only, use 'ro'");
                return -1;
        case KEY_DISCARD:
                return 0;
        case KEY_ANONYMOUS:
                cfg->anonymous = true;
                return 0;
        case KEY_INSECURE:
                cfg->insecure = true;
                return 0;
        case FUSE_OPT_KEY_NONOPT:
                /* The first bare argument is the source; the mountpoint is left to libfuse. */
                if (cfg->source)
                        return 1;
                cfg->source = strdup(arg);
                return cfg->source ? 0 : -1;
        case FUSE_OPT_KEY_OPT:
                /* Userspace-only annotations from fstab (x-systemd.*, comment=). */
                if (strncmp(arg, "x-", 2) == 0 || strncmp(arg, "comment=", 8) == 0)
                        return 0;
                return 1;
        default:
                return 1;
        }
}


/*
 * The daemon changes to "/" when it detaches: a relative path given on the
 * command line must be made absolute first.  URLs ("scheme://...") are left alone.
 */
static int absolute_path(const char *path, char **ret_path)
{
        char cwd[PATH_MAX];
        char *p;

        if (path[0] == '/' || strstr(path, "://")) {
                p = strdup(path);
        } else {
                if (!getcwd(cwd, sizeof(cwd)))
                        return -errno;
                if (asprintf(&p, "%s/%s", cwd, path) < 0)
                        p = NULL;
        }
        if (!p)
                return -ENOMEM;
        *ret_path = p;
        return 0;
}

/*
 * libfuse logs through us (and so to syslog once daemonized).  It sometimes
 * writes one line in several calls; pieces are gathered per thread until
 * the newline so that each line stays one log message.
 */
__attribute__((format(printf, 2, 0))) static void fuse_log_sink(enum fuse_log_level level,
                                                                const char *fmt, va_list ap)
{
        static __thread char line[1024];
        static __thread size_t len;
        int n;

        if (len < sizeof(line) - 1) {
                n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
                if (n > 0)
                        len += (size_t)n < sizeof(line) - len ? (size_t)n : sizeof(line) - 1 - len;
        }
        if (len == 0 || (line[len - 1] != '\n' && len < sizeof(line) - 1))
                return;
        /* FUSE_LOG_* are the syslog levels, in the same order. */
        cairn_log((int)level, "%s", line);
        len = 0;
        line[0] = '\0';
}

static void syslog_sink(int level, const char *msg)
{
        syslog(level, "%s", msg);
}

/*
 * The kernel caps readahead at the smaller of what init() asks for and the
 * mount's BDI read_ahead_kb, which starts at 128 KiB: raise the latter.
 * Best effort (needs root and sysfs); reads work either way, only slower.
 */
static void raise_readahead(const char *mountpoint)
{
        struct cairn_mount_entry mount;
        char path[64], value[16];
        int fd, r, n;

        /*
         * The device number of our mount (the last fuse.cairnfs one on
         * mountpoint: the one on top) comes from mountinfo: stat() would wait
         * for a FUSE reply that nobody is serving yet.
         */
        r = cairn_mountinfo_find(mountpoint, "fuse.cairnfs", &mount);
        if (r <= 0) {
                cairn_debug("cannot find '%s' in mountinfo: %s", mountpoint,
                            strerror(r < 0 ? -r : ENOENT));
                return;
        }
        snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", mount.major,
                 mount.minor);
        n = snprintf(value, sizeof(value), "%u\n", CAIRNFS_READAHEAD / 1024);
        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, value, (size_t)n) != n)
                cairn_debug("cannot set '%s': %s", path, strerror(errno));
        if (fd >= 0)
                close(fd);
}

/*
 * Options cairnfs always adds, after the user's so that they win: the
 * volume is read-only; setuid bits and device nodes from a volume are not
 * honoured (a volume is data, and its builder is not necessarily root);
 * the kernel enforces the recorded modes, as on any other filesystem; and
 * max_read must match what init() announces.
 */
static int add_mount_options(struct fuse_args *args, const char *source)
{
        char *opts = NULL, *fsname = NULL;
        char max_read[32];
        int r = -ENOMEM;

        snprintf(max_read, sizeof(max_read), "max_read=%u", CAIRNFS_MAX_READ);
        if (asprintf(&fsname, "fsname=%s", source) < 0) {
                fsname = NULL;
                goto out;
        }
        if (fuse_opt_add_opt(&opts, "ro,nosuid,nodev,default_permissions,subtype=cairnfs") < 0 ||
            fuse_opt_add_opt(&opts, max_read) < 0 ||
            /* The source may hold ',' or '\': escape them for libfuse's option parser. */
            fuse_opt_add_opt_escaped(&opts, fsname) < 0 || fuse_opt_add_arg(args, "-o") < 0 ||
            fuse_opt_add_arg(args, opts) < 0)
                goto out;
        r = 0;
out:
        free(fsname);
        free(opts);
        return r;
}

/* What the options resolve to; strings are owned by the config or by this. */
enum prefetch_mode { PREFETCH_AUTO, PREFETCH_ALL, PREFETCH_NONE };
#define PREFETCH_RATE_DEFAULT (256ull << 20)

struct cairnfs_settings {
        enum prefetch_mode prefetch;
        char *prefetch_profile;  /* absolute; NULL: none */
        char *record_profile;    /* absolute; NULL: none */
        uint64_t prefetch_rate;  /* bytes per second for prefetch=all */
        char *store_url; /* absolute unless a URL */
        const char *ref; /* points into the source */
        char *cache_dir; /* absolute */
        char *ca_file;   /* absolute; NULL: none */
        struct cairn_store_options store;
        struct cairn_volume_options volume;
};

static void settings_release(struct cairnfs_settings *st)
{
        free(st->prefetch_profile);
        free(st->record_profile);
        free(st->store_url);
        free(st->cache_dir);
        free(st->ca_file);
}

static bool url_is_s3(const char *url)
{
        return strncmp(url, "s3://", 5) == 0;
}

static bool url_is_remote(const char *url)
{
        return url_is_s3(url) || strncmp(url, "http://", 7) == 0 ||
               strncmp(url, "https://", 8) == 0;
}

/* A string option that is given must not be empty. */
static int check_not_empty(const char *name, const char *value)
{
        if (value && value[0] == '\0') {
                cairn_err("invalid %s '': expected a value", name);
                return -EINVAL;
        }
        return 0;
}

/*
 * Checks and converts the options, reporting each problem as one line.
 * Everything here is a usage error: nothing has touched the store yet.
 */
static int resolve_settings(struct cairnfs_config *cfg, struct cairnfs_settings *st)
{
        char default_cache[PATH_MAX], *hash;
        const char *s3_opt = NULL, *remote_opt = NULL;
        uint64_t v;
        int r;

        hash = strrchr(cfg->source, '#');
        if (!hash || hash == cfg->source || hash[1] == '\0') {
                cairn_err("invalid source '%s': expected STORE#REF", cfg->source);
                return -EINVAL;
        }
        st->ref = hash + 1;
        *hash = '\0';
        r = absolute_path(cfg->source, &st->store_url);
        *hash = '#';
        if (r < 0) {
                cairn_err("invalid store '%.*s': %s", (int)(hash - cfg->source), cfg->source,
                          strerror(-r));
                return r;
        }

        if (cfg->memory_limit) {
                r = cairn_parse_size(cfg->memory_limit, SIZE_MAX, &v);
                if (r < 0 || v == 0) {
                        cairn_err("invalid memory_limit '%s': expected a size like 64M",
                                  cfg->memory_limit);
                        return -EINVAL;
                }
                if (v < CAIRN_DAEMON_MEMORY_MIN) {
                        cairn_err("memory_limit '%s' is too small: at least %uM",
                                  cfg->memory_limit, CAIRN_DAEMON_MEMORY_MIN >> 20);
                        return -EINVAL;
                }
                st->volume.memory_limit = (size_t)v;
        }
        /* The limit is the daemon's; decoded chunks get what the rest leaves. */
        st->volume.memory_limit = (st->volume.memory_limit ? st->volume.memory_limit
                                                           : CAIRN_VOLUME_MEMORY_DEFAULT) -
                                  CAIRN_DAEMON_MEMORY_OVERHEAD;
        if (cfg->cache_size) {
                r = cairn_parse_size(cfg->cache_size, UINT64_MAX, &v);
                if (r < 0 || v == 0) {
                        cairn_err("invalid cache_size '%s': expected a size like 10G",
                                  cfg->cache_size);
                        return -EINVAL;
                }
                st->volume.cache_max_bytes = v;
        }
        if (cfg->cache_min_free) {
                if (cairn_parse_uint(cfg->cache_min_free, 1, CACHE_MIN_FREE_MAX, &v) < 0) {
                        cairn_err("invalid cache_min_free '%s': expected a percentage, 1..%u",
                                  cfg->cache_min_free, CACHE_MIN_FREE_MAX);
                        return -EINVAL;
                }
                st->volume.cache_min_free_percent = (unsigned)v;
        }
        if (cfg->deadline) {
                if (cairn_parse_uint(cfg->deadline, 1, DEADLINE_MAX_S, &v) < 0) {
                        cairn_err("invalid deadline '%s': expected whole seconds, 1..%u",
                                  cfg->deadline, DEADLINE_MAX_S);
                        return -EINVAL;
                }
                /* The store's requests and the volume's reads share one deadline. */
                st->store.deadline_ms = (unsigned)v * 1000u;
                st->volume.deadline_ms = st->store.deadline_ms;
        }
        if (cfg->connections) {
                if (cairn_parse_uint(cfg->connections, 1, CONNECTIONS_MAX, &v) < 0) {
                        cairn_err("invalid connections '%s': expected 1..%u", cfg->connections,
                                  CONNECTIONS_MAX);
                        return -EINVAL;
                }
                st->store.max_connections = (unsigned)v;
                remote_opt = "connections";
        }

        if (check_not_empty("endpoint", cfg->endpoint) < 0 ||
            check_not_empty("region", cfg->region) < 0 ||
            check_not_empty("aws_profile", cfg->aws_profile) < 0)
                return -EINVAL;
        /* Not echoed: the part before '@' would be a secret, and the error may reach syslog. */
        if (cfg->endpoint && strchr(cfg->endpoint, '@')) {
                cairn_err("invalid endpoint: credentials do not belong in the URL (use "
                          "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)");
                return -EINVAL;
        }
        st->store.endpoint = cfg->endpoint;
        st->store.region = cfg->region;
        st->store.profile = cfg->aws_profile;
        if (cfg->endpoint)
                s3_opt = "endpoint";
        if (cfg->region)
                s3_opt = "region";
        if (cfg->aws_profile)
                s3_opt = "aws_profile";
        if (cfg->addressing) {
                if (strcmp(cfg->addressing, "path") == 0) {
                        st->store.addressing = CAIRN_S3_ADDRESSING_PATH;
                } else if (strcmp(cfg->addressing, "virtual") == 0) {
                        st->store.addressing = CAIRN_S3_ADDRESSING_VIRTUAL;
                } else if (strcmp(cfg->addressing, "auto") == 0) {
                        st->store.addressing = CAIRN_S3_ADDRESSING_AUTO;
                } else {
                        cairn_err("invalid addressing '%s': expected path, virtual or auto",
                                  cfg->addressing);
                        return -EINVAL;
                }
                s3_opt = "addressing";
        }
        if (cfg->anonymous) {
                st->store.anonymous = true;
                s3_opt = "anonymous";
        }
        if (cfg->ca_file) {
                /* Checked now: curl would only say so at the first connection, to syslog. */
                if (cfg->ca_file[0] == '\0' || access(cfg->ca_file, R_OK) < 0) {
                        cairn_err("cannot read ca_file '%s': %s", cfg->ca_file,
                                  cfg->ca_file[0] ? strerror(errno) : "empty path");
                        return -EINVAL;
                }
                r = absolute_path(cfg->ca_file, &st->ca_file);
                if (r < 0) {
                        cairn_err("invalid ca_file '%s': %s", cfg->ca_file, strerror(-r));
                        return r;
                }
                st->store.ca_file = st->ca_file;
                remote_opt = "ca_file";
        }
        if (cfg->insecure) {
                st->store.insecure = true;
                remote_opt = "insecure";
        }
        /* An option the store would ignore is a mistake worth hearing about. */
        if (s3_opt && !url_is_s3(st->store_url)) {
                cairn_err("option '%s' applies to s3:// stores only, not to '%s'", s3_opt,
                          st->store_url);
                return -EINVAL;
        }
        if (remote_opt && !url_is_remote(st->store_url)) {
                cairn_err("option '%s' applies to http://, https:// and s3:// stores only, "
                          "not to '%s'",
                          remote_opt, st->store_url);
                return -EINVAL;
        }

        if (cfg->cache_dir) {
                if (cfg->cache_dir[0] == '\0') {
                        cairn_err("invalid cache_dir '': expected a directory");
                        return -EINVAL;
                }
                r = absolute_path(cfg->cache_dir, &st->cache_dir);
        } else {
                r = cairn_cache_default_dir(default_cache, sizeof(default_cache));
                if (r < 0) {
                        cairn_err("cannot find a default cache directory: %s (use -o "
                                  "cache_dir=DIR)",
                                  strerror(-r));
                        return r;
                }
                r = absolute_path(default_cache, &st->cache_dir);
        }
        if (r < 0) {
                cairn_err("invalid cache_dir '%s': %s", cfg->cache_dir ? cfg->cache_dir : "",
                          strerror(-r));
                return r;
        }
        st->volume.cache_dir = st->cache_dir;

        st->prefetch = PREFETCH_AUTO;
        st->prefetch_rate = PREFETCH_RATE_DEFAULT;
        if (cfg->prefetch) {
                if (!strcmp(cfg->prefetch, "all"))
                        st->prefetch = PREFETCH_ALL;
                else if (!strcmp(cfg->prefetch, "none"))
                        st->prefetch = PREFETCH_NONE;
                else if (strcmp(cfg->prefetch, "auto") != 0) {
                        cairn_err("invalid prefetch '%s': expected auto, all or none",
                                  cfg->prefetch);
                        return -EINVAL;
                }
        }
        if (cfg->prefetch_rate) {
                r = cairn_parse_size(cfg->prefetch_rate, UINT64_MAX, &v);
                if (r < 0 || v == 0) {
                        cairn_err("invalid prefetch_rate '%s': expected bytes per second, "
                                  "like 200M",
                                  cfg->prefetch_rate);
                        return -EINVAL;
                }
                st->prefetch_rate = v;
        }
        if (cfg->prefetch_profile) {
                struct cairn_profile probe = {0};
                char why[256] = "";
                r = cairn_profile_load(cfg->prefetch_profile, &probe, why, sizeof(why));
                cairn_profile_release(&probe);
                if (r < 0) {
                        cairn_err("invalid prefetch_profile: %s", why[0] ? why : strerror(-r));
                        return r;
                }
                r = absolute_path(cfg->prefetch_profile, &st->prefetch_profile);
                if (r < 0)
                        return r;
        }
        if (cfg->record_profile) {
                r = absolute_path(cfg->record_profile, &st->record_profile);
                if (r < 0)
                        return r;
                st->volume.record_profile = st->record_profile;
        }
        return 0;
}

/*
 * Background fill of the cache once mounted (threads start here, after the
 * fork): prefetch=all takes every chunk at a bounded rate; otherwise a
 * profile named with prefetch_profile, or the one stored in the manifest
 * (prefetch=auto), is replayed at full speed, since it is exactly what the
 * workload is about to read.
 */
static void start_prefetch(const struct cairnfs_settings *st, struct cairn_volume *vol)
{
        const struct cairn_manifest *m = cairn_volume_manifest(vol);
        uint64_t *chunks = NULL;
        size_t n = 0;
        int r = 0;
        const char *what = NULL;

        if (st->prefetch == PREFETCH_NONE)
                return;
        if (st->prefetch == PREFETCH_ALL) {
                r = cairn_volume_all_chunks(vol, &chunks, &n);
                what = "the whole volume";
                if (r >= 0)
                        r = cairn_volume_prefetch_background(vol, chunks, n, 2, st->prefetch_rate);
        } else if (st->prefetch_profile) {
                struct cairn_profile p = {0};
                char why[256] = "";
                r = cairn_profile_load(st->prefetch_profile, &p, why, sizeof(why));
                if (r >= 0)
                        r = cairn_profile_resolve(&p, m, &chunks, &n);
                cairn_profile_release(&p);
                what = "the access profile";
                if (r >= 0)
                        r = cairn_volume_prefetch_background(vol, chunks, n, 4, 0);
        } else if (m->profile_count) {
                what = "the volume's stored access profile";
                r = cairn_volume_prefetch_background(vol, m->profile, m->profile_count, 4, 0);
        }
        if (what && r >= 0)
                cairn_info("prefetching %s in the background (%zu chunks)", what,
                           n ? n : (size_t)m->profile_count);
        else if (what && r != -EINVAL)
                cairn_warn("cannot prefetch %s: %s", what, strerror(-r));
        else if (what)
                cairn_warn("cannot prefetch %s without a usable cache directory", what);
        free(chunks);
}

/* "cannot open 'REF': reason" is the one line a failed mount prints. */
static int open_volume(const struct cairnfs_settings *st, struct cairn_store **ret_store,
                       struct cairn_volume **ret_vol)
{
        struct cairn_store *store = NULL;
        struct cairn_volume *vol = NULL;
        struct cairn_ref ref;
        char errbuf[512] = "";
        int r;

        r = cairn_ref_parse(st->ref, &ref);
        if (r < 0) {
                cairn_err("cannot open '%s': invalid reference (expected NAME:TAG or "
                          "NAME@sha256:HEX)",
                          st->ref);
                return r;
        }
        r = cairn_store_open_with(st->store_url, &st->store, &store, errbuf, sizeof(errbuf));
        if (r < 0) {
                if (errbuf[0])
                        cairn_err("cannot open '%s': %s", st->ref, errbuf);
                else
                        cairn_err("cannot open '%s': store '%s': %s", st->ref, st->store_url,
                                  strerror(-r));
                return r;
        }
        r = cairn_volume_open(store, &ref, &st->volume, &vol, errbuf, sizeof(errbuf));
        if (r < 0) {
                cairn_err("cannot open '%s': %s", st->ref, errbuf[0] ? errbuf : strerror(-r));
                cairn_store_free(store);
                return r;
        }
        *ret_store = store;
        *ret_vol = vol;
        return 0;
}

/*
 * Forks the daemon.  The parent never returns: it waits until the daemon
 * reports through the pipe (daemon_ready()) and exits with the status it
 * reports, or with EXIT_MOUNT_FAILED if the daemon dies first (it has then
 * said why on the stderr they share).  The daemon gets the pipe's write end.
 */
static int daemon_start(int *ret_notify_fd)
{
        unsigned char status = EXIT_MOUNT_FAILED;
        int fds[2];
        ssize_t n;
        pid_t pid;

        if (pipe2(fds, O_CLOEXEC) < 0)
                return -errno;
        /* Nothing buffered may be written twice. */
        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid < 0) {
                int r = -errno;

                close(fds[0]);
                close(fds[1]);
                return r;
        }
        if (pid == 0) {
                close(fds[0]);
                /* Our own session: the caller's terminal hanging up must not stop us. */
                setsid();
                *ret_notify_fd = fds[1];
                return 0;
        }
        close(fds[1]);
        do {
                n = read(fds[0], &status, 1);
        } while (n < 0 && errno == EINTR);
        if (n != 1)
                status = EXIT_MOUNT_FAILED;
        _exit(status);
}

/*
 * The daemon is serving: let go of the caller's working directory and
 * terminal (so that `x=$(cairnfs ...)` returns), then release the parent
 * with status 0.
 */
static int daemon_ready(int *notify_fd)
{
        unsigned char status = EXIT_SUCCESS;
        int fd, r = 0;

        if (chdir("/") < 0)
                r = -errno;
        fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                r = -errno;
        } else {
                if (dup2(fd, STDIN_FILENO) < 0 || dup2(fd, STDOUT_FILENO) < 0 ||
                    dup2(fd, STDERR_FILENO) < 0)
                        r = -errno;
                if (fd > STDERR_FILENO)
                        close(fd);
        }
        if (r < 0)
                return r;
        if (write(*notify_fd, &status, 1) != 1)
                r = -errno;
        close(*notify_fd);
        *notify_fd = -1;
        return r;
}

static void config_release(struct cairnfs_config *cfg)
{
        free(cfg->source);
        free(cfg->cache_dir);
        free(cfg->memory_limit);
        free(cfg->cache_size);
        free(cfg->cache_min_free);
        free(cfg->endpoint);
        free(cfg->region);
        free(cfg->aws_profile);
        free(cfg->addressing);
        free(cfg->ca_file);
        free(cfg->connections);
        free(cfg->deadline);
        free(cfg->prefetch);
        free(cfg->prefetch_profile);
        free(cfg->prefetch_rate);
        free(cfg->record_profile);
}

int main(int argc, char *argv[])
{
        struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
        struct cairnfs_config cfg = {0};
        struct cairnfs_settings settings = {0};
        struct fuse_cmdline_opts fopts = {0};
        struct fuse_loop_config *loop_cfg = NULL;
        struct fuse_session *se = NULL;
        struct cairn_store *store = NULL;
        struct cairnfs fs = {0};
        char max_threads[32];
        bool mounted = false, handlers = false;
        int ret = EXIT_USAGE, notify_fd = -1, r;

        cairn_log_set_program("cairnfs");
        fuse_set_log_func(fuse_log_sink);
        /*
         * A fixed mmap threshold, just above libfuse's 1 MiB request buffers
         * (one per worker thread): those stay in the malloc arenas, while
         * anything larger goes back to the kernel when freed instead of
         * growing an arena's high-water mark.  Chunk buffers are mapped and
         * recycled by the volume itself.  Resident memory then follows the
         * volume's budget.
         */
        mallopt(M_MMAP_THRESHOLD, 2 * 1024 * 1024 + 4096);
        mallopt(M_ARENA_MAX, 4);

        if (fuse_opt_parse(&args, &cfg, cairnfs_opts, opt_proc) < 0)
                goto out;
        if (cfg.show_help) {
                usage(stdout);
                ret = EXIT_SUCCESS;
                goto out;
        }
        if (cfg.show_version) {
                printf("cairnfs %s\nFUSE library version %s\n", CAIRN_VERSION, fuse_pkgversion());
                ret = EXIT_SUCCESS;
                goto out;
        }
        /* Our default thread cap goes first, so that a max_threads= of the user's wins. */
        snprintf(max_threads, sizeof(max_threads), "-omax_threads=%u", CAIRNFS_MAX_THREADS);
        if (fuse_opt_insert_arg(&args, 1, max_threads) < 0) {
                cairn_err("out of memory");
                goto out;
        }
        /* -f, -d, -s, mountpoint, max_threads=, max_idle_threads=; the rest stays in args. */
        if (fuse_parse_cmdline(&args, &fopts) < 0)
                goto out;
        if (!cfg.source || !fopts.mountpoint) {
                cairn_err("missing %s (see cairnfs --help)",
                          !cfg.source ? "STORE#REF" : "MOUNTPOINT");
                goto out;
        }
        if (fopts.debug)
                cairn_log_set_level(LOG_DEBUG);
        if (resolve_settings(&cfg, &settings) < 0)
                goto out;

        if (add_mount_options(&args, cfg.source) < 0) {
                cairn_err("out of memory");
                goto out;
        }
        /* Before opening the volume, so that a bad option costs no manifest fetch. */
        se = fuse_session_new(&args, &cairnfs_ops, sizeof(cairnfs_ops), &fs);
        if (!se)
                goto out;
        if (settings.store.insecure)
                cairn_warn("warning: TLS verification disabled (insecure): the server's "
                           "certificate is not checked");

        ret = EXIT_MOUNT_FAILED;
        /* Before anything starts a thread: see the top of this file. */
        if (!fopts.foreground) {
                r = daemon_start(&notify_fd);
                if (r < 0) {
                        cairn_err("cannot start the daemon: %s", strerror(-r));
                        goto out;
                }
        }
        if (open_volume(&settings, &store, &fs.vol) < 0)
                goto out;
        fs.man = cairn_volume_manifest(fs.vol);
        fs.inode_count = cairn_manifest_inode_count(fs.man);

        if (fuse_set_signal_handlers(se) < 0) {
                cairn_err("cannot install signal handlers");
                goto out;
        }
        handlers = true;
        if (fuse_session_mount(se, fopts.mountpoint) < 0) {
                cairn_err("cannot mount '%s' on '%s'", settings.ref, fopts.mountpoint);
                goto out;
        }
        mounted = true;
        raise_readahead(fopts.mountpoint);

        /* The parent exits 0 here, with the mount in place. */
        if (!fopts.foreground) {
                r = daemon_ready(&notify_fd);
                if (r < 0) {
                        cairn_err("cannot detach: %s", strerror(-r));
                        goto out;
                }
                openlog("cairnfs", LOG_PID, LOG_DAEMON);
                cairn_log_set_func(syslog_sink);
        }
        cairn_info("mounted '%s' on '%s'", cfg.source, fopts.mountpoint);
        if (cairn_volume_cache_error(fs.vol))
                cairn_warn("cache directory '%s' is not usable (%s): reading from the store",
                           settings.cache_dir, strerror(-cairn_volume_cache_error(fs.vol)));
        start_prefetch(&settings, fs.vol);
        if (settings.store.insecure)
                cairn_warn("TLS verification is disabled for '%s' (insecure)", cfg.source);

        if (fopts.singlethread) {
                r = fuse_session_loop(se);
        } else {
                loop_cfg = fuse_loop_cfg_create();
                if (!loop_cfg) {
                        cairn_err("out of memory");
                        goto out;
                }
                /* One /dev/fuse fd per worker: no contention on a single queue. */
                fuse_loop_cfg_set_clone_fd(loop_cfg, 1);
                fuse_loop_cfg_set_idle_threads(loop_cfg, fopts.max_idle_threads != UINT_MAX
                                                                 ? fopts.max_idle_threads
                                                                 : CAIRNFS_MAX_IDLE_THREADS);
                fuse_loop_cfg_set_max_threads(loop_cfg, fopts.max_threads);
                r = fuse_session_loop_mt(se, loop_cfg);
        }
        /* 0: unmounted; > 0: the signal that asked us to stop; < 0: a failure. */
        if (r < 0) {
                cairn_err("session loop failed: %s", strerror(-r));
                goto out;
        }
        if (r > 0)
                cairn_info("unmounting '%s' (%s)", fopts.mountpoint, strsignal(r));
        else
                cairn_info("'%s' was unmounted", fopts.mountpoint);
        ret = EXIT_SUCCESS;
out:
        if (mounted)
                fuse_session_unmount(se);
        if (handlers)
                fuse_remove_signal_handlers(se);
        /*
         * The volume goes first: freeing it completes the reads still queued
         * in its reader pool, and their replies need the session.
         */
        cairn_volume_free(fs.vol);
        if (se)
                fuse_session_destroy(se);
        fuse_loop_cfg_destroy(loop_cfg);
        cairn_store_free(store);
        free(fopts.mountpoint);
        fuse_opt_free_args(&args);
        settings_release(&settings);
        config_release(&cfg);
        closelog();
        if (notify_fd >= 0) {
                /* The parent is still waiting: it exits with our status. */
                unsigned char status = (unsigned char)ret;

                if (write(notify_fd, &status, 1) < 0)
                        ret = EXIT_MOUNT_FAILED;
                close(notify_fd);
        }
        return ret;
}
