/* systemd's readiness protocol (sd_notify(3)) for `duckstore serve` under a
 * Type=notify unit: one datagram per state change to the unix socket named
 * by $NOTIFY_SOCKET. Without that variable (not started by systemd) every
 * call does nothing. */
#ifndef DS_COMMON_SDNOTIFY_H
#define DS_COMMON_SDNOTIFY_H

/* The server listens: systemd considers the start done. */
void ds_sdnotify_ready(void);
/* A SIGHUP reload begins; ds_sdnotify_ready() ends it. */
void ds_sdnotify_reloading(void);
/* Shutdown has begun. */
void ds_sdnotify_stopping(void);

#endif
