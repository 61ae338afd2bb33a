/* The worker side of `moonlet serve --workers N` (worker.c): a worker is this binary run
 * by the supervisor (supervisor.h) with its environment saying which inherited
 * descriptors are what:
 *   MOONLET_LISTEN_FD       the slot's listening socket (serve on it: ml_config_t.listen_fd)
 *   MOONLET_READY_FD        a pipe: one byte written, then closed, once the worker serves
 *   MOONLET_WORKER          the slot, 0..N-1 (log lines say "[worker 1]")
 *   MOONLET_METRICS_SLOT    slot + (generation % 2) * N: never the same for two workers
 *                           alive at once, even while a reload overlaps two generations
 *   MOONLET_SUPERVISOR_PID  the supervisor: the worker ends if it is gone
 * plus one variable per descriptor passed with ml_supervisor_pass_fd, left as they are
 * for whoever reads them. ml_worker_init reads (and unsets) the five above. */
#ifndef ML_WORKER_H
#define ML_WORKER_H
#include <stddef.h>

typedef struct {
  int listen_fd;
  int ready_fd;
  int slot;
  int metrics_slot;
} ml_worker_t;

/* Is this process a worker? Returns 0 and fills w (the variables unset, log lines tagged,
 * SIGTERM asked for when the supervisor dies, SIGINT, SIGHUP and SIGUSR1 ignored: those
 * are the supervisor's to pass on), 1 when it is not a worker (no MOONLET_LISTEN_FD), or -1
 * with a message in err: malformed variables, or the supervisor is gone already. */
int ml_worker_init(ml_worker_t *w, char *err, size_t errlen);
/* Tells the supervisor the worker serves (the app loaded, its startup hooks ran): writes
 * the byte and closes the pipe. */
void ml_worker_ready(ml_worker_t *w);
/* After ml_host_handle_signals: SIGINT ignored again (a terminal's Ctrl-C reaches the whole
 * process group; the supervisor turns it into one SIGTERM per worker). */
void ml_worker_signals(void);
#endif
