/* The supervisor's hand-off API (core/prod/supervisor.h), with this very program as the
 * worker: the supervisor runs /proc/self/exe, which sees MOONLET_LISTEN_FD and plays a
 * worker that reports what it was given on a descriptor passed with
 * ml_supervisor_pass_fd, then waits for SIGTERM. workers_spec.lua tests the real one. */
#include "log.h"
#include "supervisor.h"
#include "worker.h"
#include "unit.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* --- the worker side ------------------------------------------------------------------- */

static int worker_main(void) {
  char err[256];
  ml_worker_t w;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigprocmask(SIG_BLOCK, &set, NULL);   /* before the ready byte: no SIGTERM is lost */
  if (ml_worker_init(&w, err, sizeof err) != 0) return 3;
  const char *fd = getenv("UNIT_REPORT_FD");
  struct sockaddr_storage a;
  socklen_t len = sizeof a;
  if (!fd || getsockname(w.listen_fd, (struct sockaddr *)&a, &len) < 0) return 4;
  char line[64];
  int n = snprintf(line, sizeof line, "%d:%d:%d:%s\n", w.slot, w.metrics_slot,
                   ntohs(((struct sockaddr_in *)&a)->sin_port),
                   getenv("MOONLET_WORKER") ? "leaked" : "unset");
  if (write(atoi(fd), line, (size_t)n) != n) return 5;
  ml_worker_ready(&w);
  int sig;
  sigwait(&set, &sig);
  return 0;
}

/* --- the supervisor side --------------------------------------------------------------- */

static struct {
  uv_pipe_t report;
  char lines[256];
  size_t len;
  int exits, exit_slots, exit_metrics;
  int pids[2];
} st;

static void exit_cb(void *arg, int slot, int metrics_slot, int pid) {
  (void)arg;
  st.exits++;
  st.exit_slots |= 1 << slot;
  st.exit_metrics |= 1 << metrics_slot;
  st.pids[slot] = pid;
}

static void alloc_cb(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  (void)h, (void)size;
  *buf = uv_buf_init(st.lines + st.len, (unsigned)(sizeof st.lines - st.len - 1));
}

/* Both workers reported: stop them all, as a SIGTERM to the supervisor does. */
static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  if (nread > 0) st.len += (size_t)nread;
  int nl = 0;
  for (size_t i = 0; i < st.len; i++) nl += st.lines[i] == '\n';
  if (nl == 2 || nread < 0) {
    uv_close((uv_handle_t *)s, NULL);
    kill(getpid(), SIGTERM);
  }
}

static void timeout_cb(uv_timer_t *t) {
  (void)t;
  printf("  timeout: the workers did not report\n");
  exit(1);
}

TEST(passes_fds_and_slots_and_reports_exits) {
  int fds[2];
  CHECK(pipe(fds) == 0);
  char *args[] = {"worker"};
  ml_supervisor_config_t cfg = {.host = "127.0.0.1", .port = 0, .workers = 2, .args = args,
                                .nargs = 1};
  ml_supervisor_t *sup = ml_supervisor_new(&cfg);
  char err[256];
  CHECK_EQ_INT(ml_supervisor_bind(sup, err, sizeof err), 0);
  CHECK(ml_supervisor_port(sup) > 0);
  CHECK_EQ_INT(ml_supervisor_pass_fd(sup, fds[1], "UNIT_REPORT_FD"), 0);
  CHECK_EQ_INT(ml_supervisor_pass_fd(sup, fds[1], "BAD=NAME"), -1);
  ml_supervisor_on_worker_exit(sup, exit_cb, NULL);
  uv_loop_t *loop = ml_supervisor_loop(sup);
  uv_pipe_init(loop, &st.report, 0);
  uv_pipe_open(&st.report, fds[0]);
  uv_read_start((uv_stream_t *)&st.report, alloc_cb, read_cb);
  uv_timer_t timeout;
  uv_timer_init(loop, &timeout);
  uv_timer_start(&timeout, timeout_cb, 10000, 0);
  uv_unref((uv_handle_t *)&timeout);
  CHECK_EQ_INT(ml_supervisor_run(sup), 0);   /* both exited 0 after the SIGTERM */
  uv_close((uv_handle_t *)&timeout, NULL);
  char want0[64], want1[64];
  int port = ml_supervisor_port(sup);
  /* generation 1: metrics slots N..2N-1 */
  snprintf(want0, sizeof want0, "0:2:%d:unset\n", port);
  snprintf(want1, sizeof want1, "1:3:%d:unset\n", port);
  st.lines[st.len] = 0;
  CHECK(strstr(st.lines, want0) != NULL);
  CHECK(strstr(st.lines, want1) != NULL);
  CHECK_EQ_INT(st.exits, 2);
  CHECK_EQ_INT(st.exit_slots, 3);
  CHECK_EQ_INT(st.exit_metrics, 4 | 8);
  CHECK(st.pids[0] > 0 && st.pids[1] > 0 && st.pids[0] != st.pids[1]);
  ml_supervisor_free(sup);
  close(fds[1]);
}

TEST(a_port_in_use_fails_at_bind) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 8) == 0);
  socklen_t len = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &len);
  char *args[] = {"worker"};
  ml_supervisor_config_t cfg = {.host = "127.0.0.1", .port = ntohs(a.sin_port), .workers = 2,
                                .args = args, .nargs = 1};
  ml_supervisor_t *sup = ml_supervisor_new(&cfg);
  char err[256], want[128];
  CHECK_EQ_INT(ml_supervisor_bind(sup, err, sizeof err), -1);
  snprintf(want, sizeof want, "cannot listen on 127.0.0.1:%d: address already in use",
           ntohs(a.sin_port));
  CHECK_EQ_STR(err, want);
  ml_supervisor_free(sup);
  cfg.host = "not-an-address";
  sup = ml_supervisor_new(&cfg);
  CHECK_EQ_INT(ml_supervisor_bind(sup, err, sizeof err), -1);
  CHECK(strstr(err, "invalid --host address 'not-an-address'") != NULL);
  ml_supervisor_free(sup);
  close(fd);
}

int main(void) {
  if (getenv("MOONLET_LISTEN_FD")) return worker_main();
  ml_log_configure(ML_LOG_WARN, NULL, NULL);   /* the supervisor's info lines */
  RUN(passes_fds_and_slots_and_reports_exits);
  RUN(a_port_in_use_fails_at_bind);
  return UNIT_DONE();
}
