/* PostgreSQL for moonlet.db (db_pg.c): a driver under the pool core (db.h), installed as
 * moonlet.core.db_pg_open(url[, connections]). */
#ifndef ML_DB_PG_H
#define ML_DB_PG_H
#include "db.h"

extern const ml_db_driver_t ml_db_pg_driver;
#endif
