/* sd_notify(3) without libsystemd: the protocol is a datagram of
 * newline-separated VAR=value lines sent to $NOTIFY_SOCKET, a path or, when
 * it starts with '@', an abstract socket. A failure is logged and otherwise
 * ignored: systemd then reports the start as timed out, which names the
 * problem better than a server that refuses to run. */
#include "common/sdnotify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/strbuf.h"

static void sdnotify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || path[0] == '\0')
        return;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof addr.sun_path) {
        ds_log_warn("cannot notify systemd: NOTIFY_SOCKET=%s is not a unix socket path", path);
        return;
    }
    memcpy(addr.sun_path, path, len);
    if (path[0] == '@')
        addr.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ds_log_warn("cannot notify systemd: socket: %s", strerror(errno));
        return;
    }
    socklen_t addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&addr, addr_len) < 0)
        ds_log_warn("cannot notify systemd at %s: %s", path, strerror(errno));
    close(fd);
}

void ds_sdnotify_ready(void)
{
    sdnotify("READY=1");
}

void ds_sdnotify_reloading(void)
{
    /* systemd 253 and later match a reload by this timestamp. */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    ds_buf b = DS_BUF_INIT;
    ds_buf_appendf(&b, "RELOADING=1\nMONOTONIC_USEC=%llu",
                   (unsigned long long)now.tv_sec * 1000000ULL + (unsigned long long)now.tv_nsec / 1000ULL);
    sdnotify(ds_buf_str(&b) != NULL ? ds_buf_str(&b) : "RELOADING=1");
    ds_buf_free(&b);
}

void ds_sdnotify_stopping(void)
{
    sdnotify("STOPPING=1");
}
