/* SQLite for moonlet.db (db_sqlite.c): a driver under the pool core (db.h), installed as
 * moonlet.core.db_sqlite_open(path[, connections]). */
#ifndef ML_DB_SQLITE_H
#define ML_DB_SQLITE_H
#include "db.h"

extern const ml_db_driver_t ml_db_sqlite_driver;
#endif
