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
 */
#include <errno.h>
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
#include <syslog.h>
#include <unistd.h>

#include "cairn/cache.h"
#include "cairn/log.h"
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
 * Worker threads.  A worker blocks while its read fetches, so the pool
 * bounds the fetches in flight (and, at one max_read buffer each, the
 * memory they hold).  -o max_threads= / max_idle_threads= override these.
 */
#define CAIRNFS_MAX_THREADS 32u
#define CAIRNFS_MAX_IDLE_THREADS 8u

/* The command line, parsed once; validated in main(). */
struct cairnfs_config {
        char *source;       /* "STORE#REF" */
        char *cache_dir;    /* -o cache_dir= */
        char *memory_limit; /* -o memory_limit=, unparsed */
        bool show_help;
        bool show_version;
};

enum {
        KEY_HELP,
        KEY_VERSION,
        KEY_RW,
        KEY_DISCARD,
};

#define CONFIG_OPT(templ, field) {templ, offsetof(struct cairnfs_config, field), 0}

static const struct fuse_opt cairnfs_opts[] = {
        CONFIG_OPT("cache_dir=%s", cache_dir),
        CONFIG_OPT("memory_limit=%s", memory_limit),
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
              "(file:///abs/path or a plain path) read-only at MOUNTPOINT.  The source\n"
              "is split at its last '#'.  Returns once the mount is ready; the daemon\n"
              "stays in the background until the volume is unmounted.\n"
              "\n"
              "Options:\n"
              "  -o cache_dir=DIR      chunk cache (default: /var/cache/cairn for root,\n"
              "                        $XDG_CACHE_HOME/cairn otherwise)\n"
              "  -o memory_limit=SIZE  decoded chunks kept in memory, K/M/G suffixes\n"
              "                        (default: 64M)\n"
              "  -o allow_other        let other users use the mount\n"
              "  -o ro                 accepted; the mount is always read-only\n"
              "  -o OPTION             other FUSE and mount(8) options pass through\n"
              "  -f                    stay in the foreground, log to stderr\n"
              "  -d                    debug: log every request (implies -f)\n"
              "  -s                    serve requests on a single thread\n"
              "  -h, --help            show this help\n"
              "  -V, --version         show the version\n"
              "\n"
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
 * "64M", "512k", "1GiB", "1048576": binary multiples, like `cairn mount
 * --memory-limit`.  -EINVAL on anything else, -ERANGE past SIZE_MAX.
 */
static int parse_size(const char *s, size_t *ret_size)
{
        unsigned long long v;
        unsigned shift = 0;
        char *end;

        if (*s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        switch (*end) {
        case '\0':
                break;
        case 'k':
        case 'K':
                shift = 10;
                break;
        case 'm':
        case 'M':
                shift = 20;
                break;
        case 'g':
        case 'G':
                shift = 30;
                break;
        default:
                return -EINVAL;
        }
        if (shift) {
                end++;
                if (strcasecmp(end, "ib") == 0)
                        end += 2;
                else if (strcasecmp(end, "b") == 0)
                        end += 1;
        }
        if (*end != '\0')
                return -EINVAL;
        if (v > (SIZE_MAX >> shift))
                return -ERANGE;
        *ret_size = (size_t)(v << shift);
        return 0;
}

/*
 * fuse_daemonize() changes to "/": a relative path given on the command
 * line must be made absolute first.  URLs ("scheme://...") are left alone.
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

/* Undoes the octal escapes (\040 for space, ...) of a /proc/self/mountinfo path, in place. */
static void unescape_mountinfo(char *s)
{
        char *out = s;

        for (; *s; s++) {
                if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
                    s[3] >= '0' && s[3] <= '7') {
                        *out++ = (char)(((s[1] - '0') << 6) | ((s[2] - '0') << 3) | (s[3] - '0'));
                        s += 3;
                } else {
                        *out++ = *s;
                }
        }
        *out = '\0';
}

/*
 * Finds the device number of our mount from /proc/self/mountinfo (the last
 * fuse.cairnfs mount on mountpoint: the one on top).  stat() cannot be used:
 * it would wait for a FUSE reply that nobody is serving yet.
 */
static int find_mount_dev(const char *mountpoint, unsigned *ret_major, unsigned *ret_minor)
{
        FILE *f = fopen("/proc/self/mountinfo", "re");
        unsigned major = 0, minor = 0;
        size_t cap = 0;
        char *line = NULL;
        bool found = false;

        if (!f)
                return -errno;
        while (getline(&line, &cap, f) > 0) {
                char *fields[5], *save = NULL, *tok, *fstype = NULL;
                unsigned maj, min;
                int i = 0;

                for (tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
                        if (i < 5) {
                                fields[i++] = tok;
                        } else if (strcmp(tok, "-") == 0) {
                                fstype = strtok_r(NULL, " \n", &save);
                                break;
                        }
                }
                if (i < 5 || !fstype || strcmp(fstype, "fuse.cairnfs") != 0)
                        continue;
                if (sscanf(fields[2], "%u:%u", &maj, &min) != 2)
                        continue;
                unescape_mountinfo(fields[4]);
                if (strcmp(fields[4], mountpoint) != 0)
                        continue;
                major = maj;
                minor = min;
                found = true;
        }
        free(line);
        fclose(f);
        if (!found)
                return -ENOENT;
        *ret_major = major;
        *ret_minor = minor;
        return 0;
}

/*
 * The kernel caps readahead at the smaller of what init() asks for and the
 * mount's BDI read_ahead_kb, which starts at 128 KiB: raise the latter.
 * Best effort (needs root and sysfs); reads work either way, only slower.
 */
static void raise_readahead(const char *mountpoint)
{
        unsigned major = 0, minor = 0;
        char path[64], value[16];
        int fd, r, n;

        r = find_mount_dev(mountpoint, &major, &minor);
        if (r < 0) {
                cairn_debug("cannot find '%s' in mountinfo: %s", mountpoint, strerror(-r));
                return;
        }
        snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", major, minor);
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

/* "cannot open 'REF': reason" is the one line a failed mount prints. */
static int open_volume(const char *store_url, const char *ref_str, const char *cache_dir,
                       size_t memory_limit, struct cairn_store **ret_store,
                       struct cairn_volume **ret_vol)
{
        struct cairn_volume_options vopts = {.cache_dir = cache_dir, .memory_limit = memory_limit};
        struct cairn_store *store = NULL;
        struct cairn_volume *vol = NULL;
        struct cairn_ref ref;
        char errbuf[512] = "";
        int r;

        r = cairn_ref_parse(ref_str, &ref);
        if (r < 0) {
                cairn_err("cannot open '%s': invalid reference (expected NAME:TAG or "
                          "NAME@sha256:HEX)",
                          ref_str);
                return r;
        }
        r = cairn_store_open(store_url, false, &store);
        if (r < 0) {
                cairn_err("cannot open '%s': store '%s': %s", ref_str, store_url, strerror(-r));
                return r;
        }
        r = cairn_volume_open(store, &ref, &vopts, &vol, errbuf, sizeof(errbuf));
        if (r < 0) {
                cairn_err("cannot open '%s': %s", ref_str, errbuf[0] ? errbuf : strerror(-r));
                cairn_store_free(store);
                return r;
        }
        *ret_store = store;
        *ret_vol = vol;
        return 0;
}

int main(int argc, char *argv[])
{
        struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
        struct cairnfs_config cfg = {0};
        struct fuse_cmdline_opts fopts = {0};
        struct fuse_loop_config *loop_cfg = NULL;
        struct fuse_session *se = NULL;
        struct cairn_store *store = NULL;
        struct cairnfs fs = {0};
        char *store_url = NULL, *cache_dir = NULL, *hash;
        char default_cache[PATH_MAX], max_threads[32];
        const char *ref_str;
        size_t memory_limit = 0;
        bool mounted = false, handlers = false;
        int ret = EXIT_USAGE, r;

        cairn_log_set_program("cairnfs");
        fuse_set_log_func(fuse_log_sink);

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

        hash = strrchr(cfg.source, '#');
        if (!hash || hash == cfg.source || hash[1] == '\0') {
                cairn_err("invalid source '%s': expected STORE#REF", cfg.source);
                goto out;
        }
        ref_str = hash + 1;
        *hash = '\0';
        r = absolute_path(cfg.source, &store_url);
        *hash = '#';
        if (r < 0) {
                cairn_err("invalid store '%.*s': %s", (int)(hash - cfg.source), cfg.source,
                          strerror(-r));
                goto out;
        }

        if (cfg.memory_limit) {
                r = parse_size(cfg.memory_limit, &memory_limit);
                if (r < 0 || memory_limit == 0) {
                        cairn_err("invalid memory_limit '%s': expected a size like 64M",
                                  cfg.memory_limit);
                        goto out;
                }
        }
        if (cfg.cache_dir) {
                if (cfg.cache_dir[0] == '\0') {
                        cairn_err("invalid cache_dir '': expected a directory");
                        goto out;
                }
                r = absolute_path(cfg.cache_dir, &cache_dir);
        } else {
                r = cairn_cache_default_dir(default_cache, sizeof(default_cache));
                if (r < 0) {
                        cairn_err("cannot find a default cache directory: %s (use -o "
                                  "cache_dir=DIR)",
                                  strerror(-r));
                        goto out;
                }
                r = absolute_path(default_cache, &cache_dir);
        }
        if (r < 0) {
                cairn_err("invalid cache_dir '%s': %s", cfg.cache_dir ? cfg.cache_dir : "",
                          strerror(-r));
                goto out;
        }

        if (add_mount_options(&args, cfg.source) < 0) {
                cairn_err("out of memory");
                goto out;
        }
        /* Before opening the volume, so that a bad option costs no manifest fetch. */
        se = fuse_session_new(&args, &cairnfs_ops, sizeof(cairnfs_ops), &fs);
        if (!se)
                goto out;

        ret = EXIT_MOUNT_FAILED;
        if (open_volume(store_url, ref_str, cache_dir, memory_limit, &store, &fs.vol) < 0)
                goto out;
        fs.man = cairn_volume_manifest(fs.vol);
        fs.inode_count = cairn_manifest_inode_count(fs.man);

        if (fuse_set_signal_handlers(se) < 0) {
                cairn_err("cannot install signal handlers");
                goto out;
        }
        handlers = true;
        if (fuse_session_mount(se, fopts.mountpoint) < 0) {
                cairn_err("cannot mount '%s' on '%s'", ref_str, fopts.mountpoint);
                goto out;
        }
        mounted = true;
        raise_readahead(fopts.mountpoint);

        /* The parent exits 0 here, with the mount in place. */
        if (fuse_daemonize(fopts.foreground) < 0) {
                cairn_err("cannot daemonize");
                goto out;
        }
        if (!fopts.foreground) {
                openlog("cairnfs", LOG_PID, LOG_DAEMON);
                cairn_log_set_func(syslog_sink);
        }
        cairn_info("mounted '%s' on '%s'", cfg.source, fopts.mountpoint);

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
        if (se)
                fuse_session_destroy(se);
        fuse_loop_cfg_destroy(loop_cfg);
        cairn_volume_free(fs.vol);
        cairn_store_free(store);
        free(fopts.mountpoint);
        fuse_opt_free_args(&args);
        free(cfg.source);
        free(cfg.cache_dir);
        free(cfg.memory_limit);
        free(store_url);
        free(cache_dir);
        closelog();
        return ret;
}
