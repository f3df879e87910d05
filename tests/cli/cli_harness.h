/* Running the built duckstore binary ($DUCKSTORE_BIN) from the CLI's
 * tests: a command with stdout and stderr kept apart, and a command in the
 * background that a test signals and reaps. */
#ifndef DS_TESTS_CLI_HARNESS_H
#define DS_TESTS_CLI_HARNESS_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"
#include "tl_http.h"

typedef struct cli_out {
    int rc;
    char *out; /* stdout, kept (tl_free_kept) */
    char *err; /* stderr, kept */
} cli_out;

/* Runs `env $DUCKSTORE_BIN <args>` (args already shell-quoted) in a shell,
 * with out.txt / err.txt in dir. */
static cli_out cli_run(const char *dir, const char *env, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static cli_out cli_run(const char *dir, const char *env, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *args = NULL;
    if (vasprintf(&args, fmt, ap) < 0)
        fail_msg("out of memory");
    va_end(ap);
    tl_keep(args);
    cli_out o;
    char *out_path = tl_keepf("%s/out.txt", dir), *err_path = tl_keepf("%s/err.txt", dir);
    o.rc = tl_run(NULL, "unset DUCKSTORE_API_TOKEN; %s '%s' %s >'%s' 2>'%s' </dev/null", env ? env : "",
                  getenv("DUCKSTORE_BIN"), args, out_path, err_path);
    o.out = tl_keep(tl_read_file(out_path));
    o.err = tl_keep(tl_read_file(err_path));
    return o;
}

__attribute__((unused)) static void cli_expect(const cli_out *o, int rc, const char *what)
{
    if (o->rc != rc)
        fail_msg("%s: exit %d, expected %d\nstdout: %s\nstderr: %s", what, o->rc, rc, o->out, o->err);
}

/* A duckstore process in the background, its output in files. */
typedef struct cli_bg {
    pid_t pid;
    char out_path[600], err_path[600];
} cli_bg;

/* Starts the shell command in the background, its stdout and stderr in
 * files of dir. */
__attribute__((unused)) static void cli_bg_start_raw(cli_bg *bg, const char *dir, const char *command)
{
    snprintf(bg->out_path, sizeof bg->out_path, "%s/bg.out", dir);
    snprintf(bg->err_path, sizeof bg->err_path, "%s/bg.err", dir);
    char *cmd = tl_keepf("unset DUCKSTORE_API_TOKEN; %s >'%s' 2>'%s' </dev/null", command, bg->out_path,
                         bg->err_path);
    fflush(NULL);
    bg->pid = fork();
    if (bg->pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (bg->pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
}

/* Starts `$DUCKSTORE_BIN <args>` (shell-quoted) as the process itself
 * (the shell execs it: the PID is duckstore's). */
__attribute__((unused)) static void cli_bg_start(cli_bg *bg, const char *dir, const char *args)
{
    cli_bg_start_raw(bg, dir, tl_keepf("exec '%s' %s", getenv("DUCKSTORE_BIN"), args));
}

/* Waits (60 s at most) for the process to end; its exit code, 128 + the
 * signal when one killed it. */
__attribute__((unused)) static int cli_bg_wait(cli_bg *bg)
{
    for (double deadline = tl_now_ms() + 60000;;) {
        int status;
        pid_t done = waitpid(bg->pid, &status, WNOHANG);
        if (done == bg->pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (tl_now_ms() > deadline) {
            kill(bg->pid, SIGKILL);
            waitpid(bg->pid, &status, 0);
            fail_msg("duckstore (PID %ld) did not end within 60 s", (long)bg->pid);
        }
        tl_sleep_ms(20);
    }
}

/* Polls PostgreSQL (60 s at most) until a session waits for an advisory
 * lock: a sync's query stands at the test's gate. */
__attribute__((unused)) static void wait_for_gate(PGconn *pg)
{
    for (double deadline = tl_now_ms() + 60000;;) {
        if (tl_pg_int(pg, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") > 0)
            return;
        if (tl_now_ms() > deadline)
            fail_msg("no query waited at the advisory lock within 60 s");
        tl_sleep_ms(20);
    }
}

/* The file's bytes, kept (for "unchanged" checks); "" when absent. */
__attribute__((unused)) static char *file_bytes(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    *len = 0;
    if (f == NULL)
        return tl_keep(strdup(""));
    char *buf = NULL;
    size_t cap = 0;
    for (;;) {
        if (*len == cap) {
            cap = cap ? cap * 2 : 1 << 20;
            buf = realloc(buf, cap);
            if (buf == NULL)
                fail_msg("out of memory");
        }
        size_t n = fread(buf + *len, 1, cap - *len, f);
        if (n == 0)
            break;
        *len += n;
    }
    fclose(f);
    return tl_keep(buf);
}

#endif
