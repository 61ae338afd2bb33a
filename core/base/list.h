/* ml_list_t: the one intrusive doubly linked list. A struct that goes in lists embeds an
 * ml_list_t per list (a "link"); the list itself is an ml_list_t head. The list is
 * circular through its head, so inserting and removing never test for the ends:
 *
 *   typedef struct { ...; ml_list_t link; } job_t;
 *   ml_list_t queue;  ml_list_init(&queue);
 *   ml_list_push(&queue, &j->link);                       // at the tail
 *   job_t *first = ml_list_first(&queue, job_t, link);    // NULL when empty
 *   ml_list_remove(&j->link);                             // from whatever list it is in
 *   ml_list_each(l, &queue) { job_t *j = ml_list_item(l, job_t, link); ... }
 *
 * A removed link points to itself, so removing it again, or asking ml_list_linked, is safe.
 * A link must be initialised (ml_list_init) or in a list before it is removed. */
#ifndef ML_LIST_H
#define ML_LIST_H
#include <stddef.h>

typedef struct ml_list_s {
  struct ml_list_s *next, *prev;
} ml_list_t;

static inline void ml_list_init(ml_list_t *l) { l->next = l->prev = l; }

static inline int ml_list_empty(const ml_list_t *head) { return head->next == head; }

/* For a link: is it in a list? */
static inline int ml_list_linked(const ml_list_t *l) { return l->next != l; }

/* Puts l after `at` (at the front when `at` is the head). */
static inline void ml_list_insert_after(ml_list_t *at, ml_list_t *l) {
  l->prev = at;
  l->next = at->next;
  at->next->prev = l;
  at->next = l;
}

/* At the tail / at the front. */
static inline void ml_list_push(ml_list_t *head, ml_list_t *l) {
  ml_list_insert_after(head->prev, l);
}
static inline void ml_list_unshift(ml_list_t *head, ml_list_t *l) {
  ml_list_insert_after(head, l);
}

static inline void ml_list_remove(ml_list_t *l) {
  l->prev->next = l->next;
  l->next->prev = l->prev;
  l->next = l->prev = l;
}

/* Moves every link of `from` (left empty) to `to`, which is overwritten. */
static inline void ml_list_take_all(ml_list_t *from, ml_list_t *to) {
  if (ml_list_empty(from)) {
    ml_list_init(to);
    return;
  }
  *to = *from;
  to->next->prev = to;
  to->prev->next = to;
  ml_list_init(from);
}

/* The struct a link is embedded in. */
#define ml_list_item(l, type, field) ((type *)(void *)((char *)(l) - offsetof(type, field)))
/* The first / last item, or NULL when the list is empty. */
#define ml_list_first(head, type, field) \
  (ml_list_empty(head) ? NULL : ml_list_item((head)->next, type, field))
#define ml_list_last(head, type, field) \
  (ml_list_empty(head) ? NULL : ml_list_item((head)->prev, type, field))
/* Walks the links; the body may remove the current one (the next is read first). */
#define ml_list_each(l, head)                                                       \
  for (ml_list_t *l = (head)->next, *l##_next_ = l->next; l != (head);             \
       l = l##_next_, l##_next_ = l->next)
#endif
