/* moonlet.run_in_pool(fn | "module.function", ...) (asyncio's run_in_executor): one of the
 * two users of the worker threads (workers.h), on the executor's threads (the scheduler's
 * `executor`), not the pool's that pooled routes use. The function crosses as bytecode (it may
 * have no upvalues) or as a name the thread's state requires; arguments and results cross
 * as packed copies (copy.h). The calling task waits meanwhile; if it is cancelled, so is
 * the job. Called on a worker thread, the function simply runs there. */
#ifndef ML_RUN_IN_POOL_H
#define ML_RUN_IN_POOL_H
#include <lua.h>

#endif
