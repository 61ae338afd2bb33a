/* Embedding moonlet from C: serve an app on a free port in a thread, stop it from main.
 * Usage: embed_example APPDIR  — prints the port, serves until stdin is closed. */
#include "moonlet.h"
#include <pthread.h>
#include <stdio.h>

static void *serve(void *h) {
  ml_host_run(h);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: embed_example APPDIR\n");
    return 2;
  }
  ml_config_t cfg;
  ml_config_defaults(&cfg);
  cfg.port = 0;
  ml_host_t *h = ml_host_new(&cfg);
  char err[512];
  if (ml_host_load(h, argv[1], err, sizeof err) || ml_host_listen(h, err, sizeof err)) {
    fprintf(stderr, "embed_example: %s\n", err);
    ml_host_free(h);
    return 2;
  }
  printf("listening on http://127.0.0.1:%d\n", ml_host_port(h));
  fflush(stdout);
  pthread_t th;
  pthread_create(&th, NULL, serve, h);
  while (getchar() != EOF) {}   /* the host runs on its thread until stdin closes */
  ml_host_stop(h);              /* from another thread: graceful stop */
  pthread_join(th, NULL);
  ml_host_free(h);
  printf("stopped\n");
  return 0;
}
