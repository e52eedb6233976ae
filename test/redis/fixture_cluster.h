/*
 * A throwaway Redis Cluster on loopback for the redis suite: 3 masters and
 * 3 replicas (`redis-server --cluster-enabled yes`, each in a temp dir on a
 * free port whose bus port, +10000, is free too), made with
 * `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`.
 * Only the processes it started are ever signalled, by pid.
 *
 * Nodes are numbered 0..5 in creation order; roles change with failovers,
 * so tests ask (fxc_master_of_slot, fxc_replica_of) instead of assuming.
 * Everything here is synchronous (a blocking hiredis client per call) and
 * asserts on failure; never call it from inside a redq callback.
 */
#ifndef REDQ_TEST_FIXTURE_CLUSTER_H
#define REDQ_TEST_FIXTURE_CLUSTER_H

#include <stdbool.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

#define FXC_NODES 6

/** Start the cluster and wait (bounded) until every node says
 *  cluster_state:ok, knows all 6 nodes and all 16384 slots are served. */
void fxc_start(void);
/** Stop every node still running (SIGTERM then SIGKILL, by pid) and remove
 *  the directory (kept when REDQ_TEST_KEEP is set). Safe to call twice. */
void fxc_stop(void);
/** "redis+cluster://127.0.0.1:P0,127.0.0.1:P1,127.0.0.1:P2". */
const char *fxc_url(void);
int fxc_port(int i);
bool fxc_alive(int i);

/** A blocking connection to node i (NULL if it does not answer); the
 *  caller frees it with redisFree. */
redisContext *fxc_connect(int i);
/** Run a command on node i; the caller frees the reply (NULL: no answer). */
redisReply *fxc_cmd(int i, const char *fmt, ...);
/** Node i's CLUSTER MYID into id. */
void fxc_node_id(int i, char id[41]);

/** The node that owns `slot` as node `ask` (-1: any live node) sees it. */
int fxc_master_of_slot(unsigned slot);
/** A live replica of master m, -1 if none. */
int fxc_replica_of(int m);
/** Is node i a master by its own word (ROLE)? */
bool fxc_is_master(int i);

/** Wait until every live node says cluster_state:ok and they all agree on
 *  the owner of every slot; asserts after timeout_ms. */
void fxc_wait_ok(int timeout_ms);

/** Start `redis-cli --cluster reshard` moving `nslots` slots from node
 *  `from` to node `to` in the background; returns its pid. Run the loop
 *  until fxc_child_done(pid). */
pid_t fxc_reshard_start(int from, int to, int nslots);
/** Has the child exited? (reaps it; asserts it exited 0 when done) */
bool fxc_child_done(pid_t pid);

/** Half-way migration of one slot, step by step (the ASK window):
 *  begin: IMPORTING on `to`, MIGRATING on `from`;
 *  keys: MIGRATE every key of the slot now on `from` to `to`;
 *  end: SETSLOT NODE `to` on every live master (then MOVED). */
void fxc_migrate_begin(unsigned slot, int from, int to);
void fxc_migrate_keys(unsigned slot, int from, int to);
void fxc_migrate_end(unsigned slot, int from, int to);

/** CLUSTER FAILOVER on replica r, once it is synced and its master knows
 *  it (bounded wait). fxc_failover also waits until r is a master, asking
 *  again (3 times at most) when a manual failover times out. */
void fxc_failover(int r);
void fxc_failover_start(int r);
/** SIGKILL node i (no wait for anything). */
void fxc_kill(int i);
/** Wait until node i says role:master (bounded); asserts. */
void fxc_wait_master(int i, int timeout_ms);

/** Keys in the cluster (DBSIZE summed over live masters). */
long long fxc_dbsize(void);
/** FLUSHALL on every live master. */
void fxc_flushall(void);

#endif /* REDQ_TEST_FIXTURE_CLUSTER_H */
