/* The worker side of --workers (see worker.h): what the supervisor passed, and the one
 * byte that says the worker serves. */
#include "worker.h"
#include "access_log.h"
#include "err.h"
#include "log.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

/* The variable name as a number >= min, unset; -1 if it is missing or not a number. */
static long take_env(const char *name, long min) {
  const char *v = getenv(name);
  if (!v) return -1;
  char *end;
  errno = 0;
  long n = strtol(v, &end, 10);
  unsetenv(name);
  return errno || end == v || *end || n < min ? -1 : n;
}

int ml_worker_init(ml_worker_t *w, char *err, size_t errlen) {
  if (!getenv("MOONLET_LISTEN_FD")) return 1;
  w->listen_fd = (int)take_env("MOONLET_LISTEN_FD", 0);
  w->ready_fd = (int)take_env("MOONLET_READY_FD", 0);
  w->slot = (int)take_env("MOONLET_WORKER", 0);
  w->metrics_slot = (int)take_env("MOONLET_METRICS_SLOT", 0);
  long parent = take_env("MOONLET_SUPERVISOR_PID", 1);
  if (w->listen_fd < 0 || w->ready_fd < 0 || w->slot < 0 || w->metrics_slot < 0 || parent < 0)
    return ml_err(err, errlen, "worker: malformed MOONLET_* variables from the supervisor");
  /* not for what the app may run (os.execute, io.popen): a child holding the socket
   * would keep the port bound after every moonlet process is gone */
  fcntl(w->listen_fd, F_SETFD, FD_CLOEXEC);
  fcntl(w->ready_fd, F_SETFD, FD_CLOEXEC);
  /* the signal's disposition first, then the parent's death: dying between the two
   * would otherwise end this process with SIGTERM's default action, which is fine too */
  signal(SIGINT, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGUSR1, SIG_IGN);   /* the host listens to it only with an access log file */
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  /* the supervisor may have died before prctl: the signal would never come */
  if (getppid() != (pid_t)parent)
    return ml_err(err, errlen, "worker: the supervisor (pid %ld) is gone", parent);
  char tag[24];
  snprintf(tag, sizeof tag, "worker %d", w->slot);
  ml_log_set_tag(tag);
  ml_access_set_worker(w->slot);
  return 0;
}

void ml_worker_ready(ml_worker_t *w) {
  if (w->ready_fd < 0) return;
  ssize_t n;
  do n = write(w->ready_fd, "1", 1);
  while (n < 0 && errno == EINTR);
  close(w->ready_fd);
  w->ready_fd = -1;
}

void ml_worker_signals(void) {
  signal(SIGINT, SIG_IGN);
}
