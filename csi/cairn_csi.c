/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cairn-csi: the Kubernetes CSI node plugin of cairn.
 *
 *   cairn-csi --endpoint unix:///csi/csi.sock --node-id NODE [options]
 *
 * Parses and checks its configuration, opens the state directory (the
 * records of what earlier runs staged and published: those mounts outlive
 * the plugin and are re-adopted here simply by reading them), then serves
 * the CSI Identity and Node services on the unix socket until SIGTERM.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn/log.h"
#include "csi_plugin.h"
#include "csi_secrets.h"
#include "csi_spawn.h"
#include "grpc_server.h"

#ifndef CAIRN_VERSION
#define CAIRN_VERSION "0.1.0"
#endif

#define EXIT_START_FAILED 1
#define EXIT_USAGE        2

/* The command line, parsed once and checked before anything starts. */
struct csi_config {
        char *endpoint;
        char *node_id;
        char *driver_name;
        char *state_dir;
        char *cache_dir;
        char *kubelet_dir;
        char *cairnfs;
        bool verbose;
};

static void usage(FILE *f)
{
        fputs("usage: cairn-csi --endpoint unix:///PATH/csi.sock --node-id NAME [OPTIONS]\n"
              "\n"
              "Serves the CSI Identity and Node services for cairn volumes on a unix\n"
              "socket: volumes are mounted read-only with cairnfs, and stay mounted when\n"
              "cairn-csi stops or restarts (it re-adopts them from --state-dir).\n"
              "\n"
              "Options:\n"
              "  --endpoint URL      unix:///PATH (or a plain /PATH) to listen on\n"
              "                      (default: $CSI_ENDPOINT)\n"
              "  --node-id NAME      this node's name (default: $NODE_NAME)\n"
              "  --driver-name NAME  CSI driver name (default: " CSI_DEFAULT_DRIVER_NAME ")\n"
              "  --state-dir DIR     records of staged and published volumes\n"
              "                      (default: " CSI_DEFAULT_STATE_DIR ")\n"
              "  --cache-dir DIR     the node's chunk cache, shared by all mounts\n"
              "                      (default: " CSI_DEFAULT_CACHE_DIR ")\n"
              "  --kubelet-dir DIR   staging and target paths must be under DIR\n"
              "                      (default: " CSI_DEFAULT_KUBELET_DIR ")\n"
              "  --cairnfs PATH      the cairnfs binary (default: next to cairn-csi,\n"
              "                      else from PATH)\n"
              "  -v, --verbose       log every call, probes included\n"
              "  -h, --help          show this help\n"
              "  -V, --version       show the version\n"
              "\n"
              "volume_context keys: store, ref, memory_limit, prefetch, region,\n"
              "endpoint (see the README).  Secrets: AWS_ACCESS_KEY_ID,\n"
              "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN.\n"
              "\n"
              "Exit status: 0 stopped by SIGTERM/SIGINT/SIGHUP (or --help, --version),\n"
              "1 cannot start, 2 usage error.\n",
              f);
}

/* "unix:///abs/path", "unix:/abs/path" or "/abs/path" -> "/abs/path". */
static const char *endpoint_path(const char *endpoint)
{
        if (strncmp(endpoint, "unix://", 7) == 0)
                endpoint += 7;
        else if (strncmp(endpoint, "unix:", 5) == 0)
                endpoint += 5;
        return endpoint[0] == '/' ? endpoint : NULL;
}

/* Drops trailing slashes; false for a path that is not absolute and clean. */
static bool clean_dir(char *dir)
{
        size_t n = strlen(dir);

        while (n > 1 && dir[n - 1] == '/')
                dir[--n] = '\0';
        if (dir[0] != '/')
                return false;
        for (const char *p = dir; *p;) {
                const char *start = ++p;
                size_t len;

                while (*p && *p != '/')
                        p++;
                len = (size_t)(p - start);
                if (n > 1 && (len == 0 || (len == 1 && start[0] == '.') ||
                              (len == 2 && start[0] == '.' && start[1] == '.')))
                        return false;
        }
        return true;
}

/* The spec's rule: 1-63 characters, alphanumeric at both ends, '-', '.', '_' inside. */
static bool driver_name_ok(const char *s)
{
        size_t n = strlen(s);

        if (n == 0 || n > 63)
                return false;
        for (size_t i = 0; i < n; i++) {
                bool alnum = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                             (s[i] >= '0' && s[i] <= '9');

                if (!alnum && (i == 0 || i == n - 1 || !strchr("-._", s[i])))
                        return false;
        }
        return true;
}

static int mkdir_parents(const char *dir, mode_t mode)
{
        char *copy = strdup(dir);
        int r = 0;

        if (!copy)
                return -ENOMEM;
        for (char *p = copy + 1;; p++) {
                if (*p == '/' || *p == '\0') {
                        char c = *p;

                        *p = '\0';
                        if (mkdir(copy, mode) < 0 && errno != EEXIST) {
                                r = -errno;
                                break;
                        }
                        *p = c;
                        if (c == '\0')
                                break;
                }
        }
        free(copy);
        return r;
}

/* The cairnfs next to this program, else the first one on PATH; absolute, malloc'ed. */
static char *find_cairnfs(void)
{
        char self[PATH_MAX], *path, *env, *save = NULL;
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

        if (n > 0) {
                self[n] = '\0';
                if (asprintf(&path, "%s/cairnfs", dirname(self)) >= 0) {
                        if (access(path, X_OK) == 0)
                                return path;
                        free(path);
                }
        }
        env = getenv("PATH");
        env = strdup(env ? env : "/usr/local/bin:/usr/bin:/bin");
        if (!env)
                return NULL;
        for (char *dir = strtok_r(env, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
                if (dir[0] != '/' || asprintf(&path, "%s/cairnfs", dir) < 0)
                        continue;
                if (access(path, X_OK) == 0) {
                        free(env);
                        return path;
                }
                free(path);
        }
        free(env);
        return NULL;
}

static int set_string(char **slot, const char *value)
{
        free(*slot);
        *slot = strdup(value);
        return *slot ? 0 : -ENOMEM;
}

/* Returns -1 to exit with status 2, 1 to exit 0 (--help/--version), 0 to run. */
static int parse_args(int argc, char *argv[], struct csi_config *cfg)
{
        enum {
                OPT_ENDPOINT = 256,
                OPT_NODE_ID,
                OPT_DRIVER,
                OPT_STATE,
                OPT_CACHE,
                OPT_KUBELET,
                OPT_CAIRNFS
        };
        static const struct option options[] = {
            {"endpoint", required_argument, NULL, OPT_ENDPOINT},
            {"node-id", required_argument, NULL, OPT_NODE_ID},
            {"driver-name", required_argument, NULL, OPT_DRIVER},
            {"state-dir", required_argument, NULL, OPT_STATE},
            {"cache-dir", required_argument, NULL, OPT_CACHE},
            {"kubelet-dir", required_argument, NULL, OPT_KUBELET},
            {"cairnfs", required_argument, NULL, OPT_CAIRNFS},
            {"verbose", no_argument, NULL, 'v'},
            {"help", no_argument, NULL, 'h'},
            {"version", no_argument, NULL, 'V'},
            {0},
        };
        const char *env;
        char **slot;
        int opt;

        if ((env = getenv("CSI_ENDPOINT")) && env[0] && set_string(&cfg->endpoint, env) < 0)
                return -1;
        if ((env = getenv("NODE_NAME")) && env[0] && set_string(&cfg->node_id, env) < 0)
                return -1;
        while ((opt = getopt_long(argc, argv, "vhV", options, NULL)) != -1) {
                switch (opt) {
                case 'h':
                        usage(stdout);
                        return 1;
                case 'V':
                        printf("cairn-csi %s\n", CAIRN_VERSION);
                        return 1;
                case 'v':
                        cfg->verbose = true;
                        continue;
                case OPT_ENDPOINT:
                        slot = &cfg->endpoint;
                        break;
                case OPT_NODE_ID:
                        slot = &cfg->node_id;
                        break;
                case OPT_DRIVER:
                        slot = &cfg->driver_name;
                        break;
                case OPT_STATE:
                        slot = &cfg->state_dir;
                        break;
                case OPT_CACHE:
                        slot = &cfg->cache_dir;
                        break;
                case OPT_KUBELET:
                        slot = &cfg->kubelet_dir;
                        break;
                case OPT_CAIRNFS:
                        slot = &cfg->cairnfs;
                        break;
                default:
                        fputs("see cairn-csi --help\n", stderr);
                        return -1;
                }
                if (set_string(slot, optarg) < 0)
                        return -1;
        }
        if (optind < argc) {
                cairn_err("unexpected argument '%s' (see cairn-csi --help)", argv[optind]);
                return -1;
        }
        return 0;
}

/* Fills defaults and checks every value; logs the first problem. */
static int check_config(struct csi_config *cfg)
{
        struct {
                char **slot;
                const char *def;
                const char *what;
        } dirs[] = {
            {&cfg->state_dir, CSI_DEFAULT_STATE_DIR, "state-dir"},
            {&cfg->cache_dir, CSI_DEFAULT_CACHE_DIR, "cache-dir"},
            {&cfg->kubelet_dir, CSI_DEFAULT_KUBELET_DIR, "kubelet-dir"},
        };

        if (!cfg->endpoint) {
                cairn_err("missing --endpoint (or CSI_ENDPOINT)");
                return -EINVAL;
        }
        if (!endpoint_path(cfg->endpoint)) {
                cairn_err("invalid endpoint '%s': expected unix:///PATH", cfg->endpoint);
                return -EINVAL;
        }
        if (!cfg->node_id) {
                cairn_err("missing --node-id (or NODE_NAME)");
                return -EINVAL;
        }
        if (strlen(cfg->node_id) > 256) {
                cairn_err("invalid node id: longer than 256 bytes");
                return -EINVAL;
        }
        if (!cfg->driver_name && set_string(&cfg->driver_name, CSI_DEFAULT_DRIVER_NAME) < 0)
                return -ENOMEM;
        if (!driver_name_ok(cfg->driver_name)) {
                cairn_err("invalid driver name '%s': 1-63 characters, alphanumeric at both "
                          "ends, '-', '.' or '_' inside",
                          cfg->driver_name);
                return -EINVAL;
        }
        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
                if (!*dirs[i].slot && set_string(dirs[i].slot, dirs[i].def) < 0)
                        return -ENOMEM;
                if (!clean_dir(*dirs[i].slot) || strcmp(*dirs[i].slot, "/") == 0) {
                        cairn_err("invalid %s '%s': expected an absolute path without '.' or "
                                  "'..'",
                                  dirs[i].what, *dirs[i].slot);
                        return -EINVAL;
                }
        }
        /* The cache dir is spelt into cairnfs's -o list, where ',' separates options. */
        if (strpbrk(cfg->cache_dir, ",\\")) {
                cairn_err("invalid cache-dir '%s': ',' and '\\' are not supported", cfg->cache_dir);
                return -EINVAL;
        }
        if (!cfg->cairnfs) {
                cfg->cairnfs = find_cairnfs();
                if (!cfg->cairnfs) {
                        cairn_err("cannot find 'cairnfs' next to cairn-csi or in PATH (use "
                                  "--cairnfs)");
                        return -ENOENT;
                }
        }
        if (cfg->cairnfs[0] != '/' || access(cfg->cairnfs, X_OK) < 0) {
                cairn_err("invalid cairnfs '%s': expected the absolute path of an executable",
                          cfg->cairnfs);
                return -EINVAL;
        }
        return 0;
}

static int count_record(const struct csi_record *rec, void *userdata)
{
        (void)rec;
        (*(unsigned *)userdata)++;
        return 0;
}

static void reap_children(void *userdata)
{
        (void)userdata;
        csi_spawn_reap();
}

int main(int argc, char *argv[])
{
        struct csi_plugin plugin = {.locks = CSI_LOCKSET_INIT,
                                    .mount_timeout_ms = CSI_MOUNT_TIMEOUT_MS};
        struct grpc_server *srv = NULL;
        struct csi_config cfg = {0};
        unsigned staged = 0, published = 0;
        int ret = EXIT_USAGE, r;

        cairn_log_set_program("cairn-csi");
        /* Files we create (mount points) must be traversable by pods. */
        umask(022);
        signal(SIGPIPE, SIG_IGN);

        r = parse_args(argc, argv, &cfg);
        if (r != 0) {
                ret = r > 0 ? EXIT_SUCCESS : EXIT_USAGE;
                goto out;
        }
        if (check_config(&cfg) < 0)
                goto out;
        if (cfg.verbose)
                cairn_log_set_level(LOG_DEBUG);

        ret = EXIT_START_FAILED;
        plugin.driver_name = cfg.driver_name;
        plugin.node_id = cfg.node_id;
        plugin.kubelet_dir = cfg.kubelet_dir;
        plugin.cache_dir = cfg.cache_dir;
        plugin.cairnfs = cfg.cairnfs;
        r = mkdir_parents(cfg.state_dir, 0700);
        if (r >= 0)
                r = csi_state_open(cfg.state_dir, &plugin.state);
        if (r < 0) {
                cairn_err("cannot open state-dir '%s': %s", cfg.state_dir, strerror(-r));
                goto out;
        }
        r = mkdir_parents(cfg.cache_dir, 0755);
        if (r < 0) {
                cairn_err("cannot create cache-dir '%s': %s", cfg.cache_dir, strerror(-r));
                goto out;
        }
        if (asprintf(&plugin.secrets_dir, "%s/secrets", cfg.state_dir) < 0) {
                plugin.secrets_dir = NULL;
                cairn_err("out of memory");
                goto out;
        }
        if (mkdir(plugin.secrets_dir, 0700) < 0 && errno != EEXIST) {
                cairn_err("cannot create '%s': %s", plugin.secrets_dir, strerror(errno));
                goto out;
        }
        /* Credentials of a mount that was in progress when an earlier run died. */
        csi_secrets_cleanup(plugin.secrets_dir);
        csi_state_foreach(plugin.state, CSI_RECORD_STAGE, count_record, &staged);
        csi_state_foreach(plugin.state, CSI_RECORD_PUBLISH, count_record, &published);

        r = grpc_server_new(
            &(struct grpc_server_config){
                .socket_path = endpoint_path(cfg.endpoint),
                .methods = csi_methods,
                .n_methods = csi_methods_count,
                .userdata = &plugin,
                .on_child = reap_children,
            },
            &srv);
        if (r < 0) {
                cairn_err("cannot listen on '%s': %s", cfg.endpoint, strerror(-r));
                goto out;
        }
        if (getpid() == 1)
                cairn_warn("running as PID 1: cairnfs daemons end with this PID namespace; "
                           "share the host's (hostPID) for mounts that outlive the plugin");
        cairn_info("cairn-csi %s: driver '%s' on node '%s' serving '%s' (%u staged, %u "
                   "published volumes re-adopted from '%s')",
                   CAIRN_VERSION, cfg.driver_name, cfg.node_id, cfg.endpoint, staged, published,
                   cfg.state_dir);
        r = grpc_server_run(srv);
        if (r < 0) {
                cairn_err("event loop failed: %s", strerror(-r));
                goto out;
        }
        ret = EXIT_SUCCESS;
out:
        grpc_server_free(srv);
        csi_state_free(plugin.state);
        free(plugin.secrets_dir);
        free(cfg.endpoint);
        free(cfg.node_id);
        free(cfg.driver_name);
        free(cfg.state_dir);
        free(cfg.cache_dir);
        free(cfg.kubelet_dir);
        free(cfg.cairnfs);
        return ret;
}
